//! `weir` for the end-to-end tests (same code as the real binary), plus
//! `weir-e2e-agent broker PORT`: an in-process rumqttd on that port, so a
//! test can kill and restart a broker that keeps no sessions.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("broker") {
        let Some(port) = args.get(2).and_then(|p| p.parse::<u16>().ok()) else {
            eprintln!("usage: weir-e2e-agent broker PORT");
            return std::process::ExitCode::from(2);
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = weir_agent::demo::start_broker_at(addr) {
            eprintln!("broker on {addr}: {e}");
            return std::process::ExitCode::from(1);
        }
        println!("broker on {addr}");
        loop {
            std::thread::park();
        }
    }
    weir_agent::cli::main()
}
