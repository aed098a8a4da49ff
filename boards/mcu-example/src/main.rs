//! The firmware entry for `thumbv7em-none-eabihf`, and the same node run on
//! the host for a quick look (`cargo run --manifest-path
//! boards/mcu-example/Cargo.toml`).
//!
//! On a real board three placeholders are replaced: the I2C bus (a HAL's
//! peripheral, e.g. `stm32f4xx_hal::i2c::I2c`, which implements
//! `embedded_hal::i2c::I2c`), the millisecond clock (SysTick or an RTC),
//! and the uplink (a UART or a radio). Here the bus is a simulated
//! ADXL345 register file, the clock jumps to the next wakeup, and the
//! uplink keeps the last frame.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use mcu_example::{LastFrame, Node};
use weir_boards::adxl345::ADDR_LOW;
use weir_boards::sim::{SimAdxl345, SimI2c};

fn bus() -> SimI2c {
    SimI2c::new().with_adxl345(SimAdxl345::new(ADDR_LOW, 1))
}

#[cfg(target_os = "none")]
mod firmware {
    use core::panic::PanicInfo;

    use cortex_m_rt::entry;

    use super::*;

    #[entry]
    fn main() -> ! {
        let mut node = Node::new(bus(), ADDR_LOW, LastFrame::default());
        let mut now: i64 = 0;
        loop {
            node.step(now);
            // Keep the frames observable, as a UART driver would.
            core::hint::black_box(node.uplink());
            // On hardware: sleep (WFI) until the SysTick counter reaches this.
            now = node.next_wakeup().max(now + 1);
        }
    }

    #[panic_handler]
    fn panic(_: &PanicInfo) -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    let mut node = Node::new(bus(), ADDR_LOW, LastFrame::default());
    let mut now = 0;
    while now < 60_000 {
        node.step(now);
        now = node.next_wakeup().max(now + 1);
    }
    println!(
        "node state: {} bytes, of which the simulated bus {} (on the stack in the firmware; no statics, no heap)",
        core::mem::size_of_val(&node),
        core::mem::size_of::<SimI2c>()
    );
    println!("{:?}", node.stats());
    println!("{:?}", node.health());
}
