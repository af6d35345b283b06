//! The repayment schedule of an annuity loan, in integer minor units: what a `LoanProvider`'s
//! offer is checked against and what the customer is shown.
//!
//! # Convention
//! - **Day count 30/360**: a year is twelve equal months, whatever their number of days. Each
//!   period's interest is `outstanding × annual_rate / 12`, rounded **half-even** (an exact
//!   half goes to the even neighbour) to the minor unit.
//! - **Level instalment** `A = P·r / (1 − (1 + r)^−n)` with `r = annual_rate / 12`, `P` the
//!   principal and `n` the number of instalments. `A` is computed exactly (rational arithmetic
//!   on big integers) and rounded half-even to the minor unit. At a zero rate `A = ⌊P / n⌋`,
//!   rounded down so that the last instalment is never smaller than the others.
//! - Each instalment's principal part is `A − interest`; the **last** instalment's principal
//!   part is the whole remaining outstanding, so the principal parts sum exactly to `P` and the
//!   outstanding ends at exactly zero. Every instalment but the last totals `A`; the last one
//!   absorbs the rounding and may differ from `A` by up to the accumulated rounding,
//!   `((1 + r)^n − 1) / r` minor units (`n` at a zero rate).
//! - A loan so small that rounding would leave an instalment repaying no principal is refused
//!   ([`ScheduleError::PrincipalTooSmall`]), so the outstanding strictly decreases.
//! - **Due dates**: monthly on the day of the month of the first due date, clamped to the last
//!   day of shorter months (Jan 31, Feb 28 or 29, Mar 31, …): each due date is the first due
//!   date plus a number of months, never the previous (clamped) due date plus one.
//! - **Early repayment**: no interest accrued in the current period is charged; paying the
//!   outstanding principal closes the loan. After a partial repayment,
//!   [`after_partial_repayment`] rebuilds the remaining instalments (same count, lower
//!   instalment).

use std::cmp::Ordering;
use std::num::NonZeroU32;

use chrono::{Months, NaiveDate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::rate::{Rate, RateError};

/// Longest loan term, in monthly instalments (30 years).
pub const TERM_MONTHS_MAX: u32 = 360;

/// Highest annual interest rate a schedule is computed for.
pub const ANNUAL_RATE_MAX: Rate = Rate::ONE;

/// Why a schedule could not be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The principal (or outstanding) is zero or negative.
    #[error("the principal must be greater than zero")]
    PrincipalNotPositive,
    /// The term is outside 1 to [`TERM_MONTHS_MAX`] months, or the instalment numbers run past it.
    #[error("a loan has 1 to {TERM_MONTHS_MAX} monthly instalments")]
    Term,
    /// The annual rate is above [`ANNUAL_RATE_MAX`].
    #[error("the annual rate is at most {ANNUAL_RATE_MAX}")]
    RateTooHigh,
    /// The principal is so small for the term and rate that an instalment would repay no principal.
    #[error("the principal is too small for the term: an instalment would repay no principal")]
    PrincipalTooSmall,
    /// A due date falls outside the calendar.
    #[error("a due date falls outside the calendar")]
    DueDate,
    /// An amount overflows a 64-bit count of minor units.
    #[error("an amount overflows a 64-bit count of minor units")]
    Overflow,
}

impl From<RateError> for ScheduleError {
    fn from(_: RateError) -> Self {
        // The only error interest on a validated balance can give is an overflow.
        ScheduleError::Overflow
    }
}

/// One monthly instalment of a schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Instalment {
    /// The instalment's number, from 1 for the loan's first.
    pub number: u32,
    /// The day it is due.
    pub due_on: NaiveDate,
    /// The part that repays principal.
    pub principal: Money,
    /// The part that pays the period's interest.
    pub interest: Money,
    /// `principal + interest`: what the customer pays.
    pub total: Money,
    /// The principal still owed once this instalment is paid.
    pub outstanding_after: Money,
}

/// A loan's instalments, in order of number and due date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The instalments, first due first.
    pub instalments: Vec<Instalment>,
}

impl Schedule {
    /// The sum of the interest parts; `None` for an empty schedule, mixed currencies or an
    /// overflow (none of which this module builds).
    pub fn total_interest(&self) -> Option<Money> {
        self.sum(|i| i.interest)
    }

    /// The sum of the instalments' totals; `None` as for [`Schedule::total_interest`].
    pub fn total(&self) -> Option<Money> {
        self.sum(|i| i.total)
    }

    fn sum(&self, part: impl Fn(&Instalment) -> Money) -> Option<Money> {
        let (first, rest) = self.instalments.split_first()?;
        rest.iter().try_fold(part(first), |sum, i| sum.checked_add(part(i)).ok())
    }
}

/// The schedule of a loan of `principal` at `annual_rate` (0 allowed) over `term_months`
/// monthly instalments, the first due on `first_due`; see the module docs for the convention.
pub fn annuity(
    principal: Money,
    annual_rate: Rate,
    term_months: u32,
    first_due: NaiveDate,
) -> Result<Schedule, ScheduleError> {
    build(principal, annual_rate, first_due, 1, term_months)
}

/// The remaining schedule after a partial early repayment left `outstanding` owed: instalments
/// `next_number..=term_months` of a loan whose instalment 1 was due on `first_due`, with a
/// lower level instalment. Due dates keep the loan's day of the month.
pub fn after_partial_repayment(
    outstanding: Money,
    annual_rate: Rate,
    first_due: NaiveDate,
    next_number: u32,
    term_months: u32,
) -> Result<Schedule, ScheduleError> {
    build(outstanding, annual_rate, first_due, next_number, term_months)
}

fn build(
    principal: Money,
    annual_rate: Rate,
    first_due: NaiveDate,
    first_number: u32,
    last_number: u32,
) -> Result<Schedule, ScheduleError> {
    if !principal.is_positive() {
        return Err(ScheduleError::PrincipalNotPositive);
    }
    if first_number == 0 || first_number > last_number || last_number > TERM_MONTHS_MAX {
        return Err(ScheduleError::Term);
    }
    if annual_rate > ANNUAL_RATE_MAX {
        return Err(ScheduleError::RateTooHigh);
    }
    let count = last_number - first_number + 1;
    if principal.amount_minor() < i64::from(count) {
        return Err(ScheduleError::PrincipalTooSmall);
    }
    let level = level_instalment(principal, annual_rate, count)?;
    let twelve = NonZeroU32::new(12).ok_or(ScheduleError::Overflow)?;
    let mut outstanding = principal;
    let mut instalments = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for number in first_number..=last_number {
        let interest = annual_rate.mul_money_half_even(outstanding, 1, twelve)?;
        let principal_part = if number == last_number {
            outstanding
        } else {
            level.checked_sub(interest).map_err(|_| ScheduleError::Overflow)?
        };
        let outstanding_after = outstanding.checked_sub(principal_part).map_err(|_| ScheduleError::Overflow)?;
        if !principal_part.is_positive() || outstanding_after.is_negative() {
            return Err(ScheduleError::PrincipalTooSmall);
        }
        let months = Months::new(number - 1);
        instalments.push(Instalment {
            number,
            due_on: first_due.checked_add_months(months).ok_or(ScheduleError::DueDate)?,
            principal: principal_part,
            interest,
            total: principal_part.checked_add(interest).map_err(|_| ScheduleError::Overflow)?,
            outstanding_after,
        });
        outstanding = outstanding_after;
    }
    if outstanding.is_zero() && instalments.last().is_some_and(|i| i.outstanding_after.is_zero()) {
        Ok(Schedule { instalments })
    } else {
        Err(ScheduleError::PrincipalTooSmall)
    }
}

/// The low 32 bits of `value`.
fn low_limb(value: u128) -> u32 {
    u32::try_from(value & 0xFFFF_FFFF).unwrap_or(0)
}

/// The level instalment, exactly: with `r = u / D` (`u` the rate's units, `D` = 12 × 10^10)
/// and `N = D + u`, `A = P·u·N^n / (D·(N^n − D^n))`, rounded half-even.
fn level_instalment(principal: Money, annual_rate: Rate, count: u32) -> Result<Money, ScheduleError> {
    let p = u64::try_from(principal.amount_minor()).map_err(|_| ScheduleError::PrincipalNotPositive)?;
    if annual_rate.is_zero() {
        return Ok(Money::new(principal.amount_minor() / i64::from(count), principal.currency()));
    }
    let d = 12 * Rate::ONE.units();
    let n = d + annual_rate.units();
    let (mut n_pow, mut d_pow) = (Big::one(), Big::one());
    for _ in 0..count {
        n_pow = n_pow.mul_u64(n);
        d_pow = d_pow.mul_u64(d);
    }
    let numerator = n_pow.mul_u64(p).mul_u64(annual_rate.units());
    let divisor = n_pow.sub(&d_pow).mul_u64(d);
    // With r at most 1/12 the instalment is at most P·(1 + r) < 2P, which fits in a u64.
    let (mut low, mut high) = (0_u64, p.saturating_mul(2));
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if divisor.mul_u64(mid).cmp(&numerator) == Ordering::Greater { high = mid - 1 } else { low = mid }
    }
    let remainder = numerator.sub(&divisor.mul_u64(low));
    let rounded = match remainder.mul_u64(2).cmp(&divisor) {
        Ordering::Greater => low + 1,
        Ordering::Equal if low % 2 == 1 => low + 1,
        _ => low,
    };
    let minor = i64::try_from(rounded).map_err(|_| ScheduleError::Overflow)?;
    Ok(Money::new(minor, principal.currency()))
}

/// A non-negative big integer: little-endian 32-bit limbs without trailing zero limbs. Only
/// what the exact instalment needs: multiply by a `u64`, subtract a smaller one, compare.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn one() -> Big {
        Big(vec![1])
    }

    fn trimmed(mut limbs: Vec<u32>) -> Big {
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
        Big(limbs)
    }

    fn mul_u64(&self, factor: u64) -> Big {
        let mut out = Vec::with_capacity(self.0.len() + 2);
        let mut carry: u128 = 0;
        for &limb in &self.0 {
            let product = u128::from(limb) * u128::from(factor) + carry;
            out.push(low_limb(product));
            carry = product >> 32;
        }
        while carry > 0 {
            out.push(low_limb(carry));
            carry >>= 32;
        }
        Big::trimmed(out)
    }

    /// `self − other`, for `self ≥ other`.
    fn sub(&self, other: &Big) -> Big {
        debug_assert!(self.cmp(other) != Ordering::Less);
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0_i64;
        for (i, &limb) in self.0.iter().enumerate() {
            let mut diff = i64::from(limb) - i64::from(other.0.get(i).copied().unwrap_or(0)) - borrow;
            borrow = i64::from(diff < 0);
            if diff < 0 {
                diff += 1 << 32;
            }
            out.push(u32::try_from(diff).unwrap_or(0));
        }
        Big::trimmed(out)
    }

    fn cmp(&self, other: &Big) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests;
