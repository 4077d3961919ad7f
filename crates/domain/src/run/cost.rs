//! Money as exact fixed-point: whole nano-dollars in an `i64`.
//!
//! Summing floats drifts; summing integers does not. A nano-dollar (10⁻⁹ USD)
//! is fine enough for per-token prices, and an `i64` of them holds over nine
//! billion dollars, so totals over millions of runs stay exact.

use std::fmt;

/// Digits kept after the decimal point.
pub const SCALE: u32 = 9;
const UNIT: i64 = 1_000_000_000;

/// A non-negative amount of US dollars, exact to the nano-dollar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error("must be a non-negative decimal number of dollars such as \"0.00042\"")]
    Malformed,
    #[error("has more than {SCALE} digits after the decimal point")]
    TooPrecise,
    #[error("is too large")]
    TooLarge,
}

impl Cost {
    pub const ZERO: Self = Self(0);

    /// # Errors
    /// A negative amount.
    pub fn from_nanos(nanos: i64) -> Result<Self, CostError> {
        if nanos < 0 {
            Err(CostError::Malformed)
        } else {
            Ok(Self(nanos))
        }
    }

    #[must_use]
    pub fn nanos(self) -> i64 {
        self.0
    }

    /// Parses a decimal such as `"0.000123"`, `"12"` or `"1e-6"`-free forms.
    /// More precision than nano-dollars is an error, never silently rounded.
    ///
    /// # Errors
    /// Anything but a plain non-negative decimal within range.
    pub fn parse(s: &str) -> Result<Self, CostError> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
            return Err(CostError::Malformed);
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > SCALE as usize {
            return Err(CostError::TooPrecise);
        }
        let whole: i64 = whole.parse().map_err(|_| CostError::TooLarge)?;
        let frac_nanos: i64 = if frac.is_empty() {
            0
        } else {
            let padded = format!("{frac:0<9}");
            padded.parse().map_err(|_| CostError::Malformed)?
        };
        whole
            .checked_mul(UNIT)
            .and_then(|w| w.checked_add(frac_nanos))
            .map(Self)
            .ok_or(CostError::TooLarge)
    }

    #[must_use]
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }
}

impl fmt::Display for Cost {
    /// The plain decimal form, with trailing zeros dropped: `0.00042`, `3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNIT;
        let frac = self.0 % UNIT;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let frac = format!("{frac:09}");
            write!(f, "{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(Cost::parse("0.000123").map(Cost::nanos), Ok(123_000));
        assert_eq!(Cost::parse("12").map(Cost::nanos), Ok(12 * UNIT));
        assert_eq!(Cost::parse("0.000000001").map(Cost::nanos), Ok(1));
        assert_eq!(Cost::parse("1.50000000000").map(Cost::nanos), Ok(1_500_000_000));
    }

    #[test]
    fn bad_decimals_are_rejected() {
        for bad in ["", "-1", "1.", ".5", "1e-6", "abc", "1.2.3", " 1"] {
            assert_eq!(Cost::parse(bad), Err(CostError::Malformed), "{bad}");
        }
        assert_eq!(Cost::parse("0.0000000001"), Err(CostError::TooPrecise));
        assert_eq!(Cost::parse("99999999999999999999"), Err(CostError::TooLarge));
    }

    #[test]
    fn costs_print_as_plain_decimals() {
        for s in ["0.000123", "12", "0.000000001", "1.5"] {
            assert_eq!(Cost::parse(s).map(|c| c.to_string()), Ok(s.to_owned()));
        }
    }

    #[test]
    fn a_million_small_costs_sum_exactly() {
        let one = Cost::parse("0.000001").expect("valid");
        let total = (0..1_000_000)
            .try_fold(Cost::ZERO, |acc, _| acc.checked_add(one))
            .expect("no overflow");
        assert_eq!(total.to_string(), "1");
    }
}
