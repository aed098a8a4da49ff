//! The error every driver in this crate returns, and how bus errors map onto
//! [`SourceErrorKind`].

use core::fmt;

use weir_core::seam::{SourceError, SourceErrorKind};

/// An error of a sensor driver on a bus whose error type is `E`
/// (an `embedded_hal::i2c::Error` or `embedded_hal::spi::Error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SensorError<E> {
    /// The bus transaction failed; the kind comes from the bus.
    Bus(E),
    /// The device answered with the wrong identity: absent, another chip at
    /// that address, or a stuck bus reading all ones or zeros.
    ChipId {
        /// What the datasheet says the register holds.
        expected: u8,
        /// What was read.
        found: u8,
    },
    /// The device did not get a measurement ready in time.
    NotReady,
    /// A value outside what the part can physically produce.
    Implausible(&'static str),
}

impl<E: fmt::Debug> fmt::Display for SensorError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SensorError::Bus(e) => write!(f, "bus error: {e:?}"),
            SensorError::ChipId { expected, found } => write!(
                f,
                "wrong chip id {found:#04x} (expected {expected:#04x}): check the address and wiring"
            ),
            SensorError::NotReady => f.write_str("no measurement ready in time"),
            SensorError::Implausible(what) => write!(f, "implausible value: {what}"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for SensorError<E> {}

/// Maps a bus error onto the source error kinds the health counters use.
pub trait BusErrorKind: fmt::Debug {
    /// The kind of this bus error.
    fn source_kind(&self) -> SourceErrorKind;
}

/// `embedded-hal` has no timeout kind; a bus whose driver knows better (the
/// Linux one, from `ETIMEDOUT`) wraps its error instead of using this.
fn from_i2c_kind(k: embedded_hal::i2c::ErrorKind) -> SourceErrorKind {
    use embedded_hal::i2c::ErrorKind as K;
    match k {
        K::NoAcknowledge(_) => SourceErrorKind::Nack,
        K::Bus | K::ArbitrationLoss | K::Overrun => SourceErrorKind::Bus,
        _ => SourceErrorKind::Other,
    }
}

/// An I2C bus error, seen through its `embedded-hal` kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct I2cFault<E>(pub E);

impl<E: embedded_hal::i2c::Error> BusErrorKind for I2cFault<E> {
    fn source_kind(&self) -> SourceErrorKind {
        from_i2c_kind(embedded_hal::i2c::Error::kind(&self.0))
    }
}

/// An SPI bus error, seen through its `embedded-hal` kind. SPI has no
/// acknowledge: a missing device shows up as a wrong chip id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpiFault<E>(pub E);

impl<E: embedded_hal::spi::Error> BusErrorKind for SpiFault<E> {
    fn source_kind(&self) -> SourceErrorKind {
        use embedded_hal::spi::ErrorKind as K;
        match embedded_hal::spi::Error::kind(&self.0) {
            K::Overrun | K::ModeFault | K::FrameFormat | K::ChipSelectFault => SourceErrorKind::Bus,
            _ => SourceErrorKind::Other,
        }
    }
}

impl<E: BusErrorKind> SourceError for SensorError<E> {
    fn kind(&self) -> SourceErrorKind {
        match self {
            SensorError::Bus(e) => e.source_kind(),
            SensorError::ChipId { .. } | SensorError::Implausible(_) => {
                SourceErrorKind::Implausible
            }
            SensorError::NotReady => SourceErrorKind::Timeout,
        }
    }
}

/// An I2C driver's error.
pub type I2cError<I> = SensorError<I2cFault<<I as embedded_hal::i2c::ErrorType>::Error>>;
/// An SPI driver's error.
pub type SpiError<S> = SensorError<SpiFault<<S as embedded_hal::spi::ErrorType>::Error>>;

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};

    #[test]
    fn i2c_kinds_map_to_source_kinds() {
        let k = |e: ErrorKind| SensorError::Bus(I2cFault(e)).kind();
        assert_eq!(
            k(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)),
            SourceErrorKind::Nack
        );
        assert_eq!(k(ErrorKind::ArbitrationLoss), SourceErrorKind::Bus);
        assert_eq!(k(ErrorKind::Bus), SourceErrorKind::Bus);
        assert_eq!(k(ErrorKind::Other), SourceErrorKind::Other);
        let e: SensorError<I2cFault<ErrorKind>> = SensorError::NotReady;
        assert_eq!(e.kind(), SourceErrorKind::Timeout);
        let e: SensorError<I2cFault<ErrorKind>> = SensorError::ChipId {
            expected: 0xe5,
            found: 0xff,
        };
        assert_eq!(e.kind(), SourceErrorKind::Implausible);
    }

    #[test]
    fn spi_kinds_map_to_source_kinds() {
        use embedded_hal::spi::ErrorKind as K;
        let k = |e: K| SensorError::Bus(SpiFault(e)).kind();
        assert_eq!(k(K::Overrun), SourceErrorKind::Bus);
        assert_eq!(k(K::ModeFault), SourceErrorKind::Bus);
        assert_eq!(k(K::ChipSelectFault), SourceErrorKind::Bus);
        assert_eq!(k(K::Other), SourceErrorKind::Other);
    }
}
