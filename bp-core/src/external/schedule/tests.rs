use proptest::prelude::*;

use super::*;
use crate::money::Currency;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn rate(s: &str) -> Rate {
    Rate::parse_non_negative(s).unwrap()
}

/// Checks every invariant the module docs promise, and returns the level instalment.
fn check(schedule: &Schedule, principal: Money) -> Money {
    let parts = &schedule.instalments;
    let level = parts[0].total;
    let mut outstanding = principal;
    for (i, part) in parts.iter().enumerate() {
        assert!(part.principal.is_positive(), "{part:?}");
        assert!(!part.interest.is_negative(), "{part:?}");
        assert_eq!(part.total, part.principal.checked_add(part.interest).unwrap());
        assert_eq!(part.outstanding_after, outstanding.checked_sub(part.principal).unwrap());
        assert!(part.outstanding_after.amount_minor() < outstanding.amount_minor());
        if i + 1 < parts.len() {
            assert_eq!(part.total, level, "instalment {}", part.number);
        }
        outstanding = part.outstanding_after;
    }
    assert!(outstanding.is_zero());
    let repaid = parts.iter().try_fold(Money::zero(principal.currency()), |s, p| s.checked_add(p.principal));
    assert_eq!(repaid, Ok(principal));
    level
}

#[test]
fn ten_thousand_at_five_percent_over_a_year() {
    let s = annuity(eur(1_000_000), rate("0.05"), 12, date(2026, 1, 15)).unwrap();
    check(&s, eur(1_000_000));
    let first = &s.instalments[0];
    assert_eq!(first.total, eur(85_607));
    assert_eq!(first.interest, eur(4_167));
    assert_eq!(first.principal, eur(81_440));
    assert_eq!(first.outstanding_after, eur(918_560));
    let last = &s.instalments[11];
    assert_eq!((last.total, last.interest, last.principal), (eur(85_612), eur(355), eur(85_257)));
    assert_eq!(s.total_interest(), Some(eur(27_289)));
    assert_eq!(s.total(), Some(eur(1_027_289)));
}

#[test]
fn hundred_thousand_at_six_percent_over_thirty_years() {
    let s = annuity(eur(10_000_000), rate("0.06"), 360, date(2026, 1, 1)).unwrap();
    assert_eq!(check(&s, eur(10_000_000)), eur(59_955));
    assert_eq!(s.instalments[0].interest, eur(50_000));
    assert_eq!(s.instalments[0].principal, eur(9_955));
    assert_eq!(s.instalments.len(), 360);
    assert_eq!(s.instalments[359].due_on, date(2055, 12, 1));
    assert_eq!(s.total_interest(), Some(eur(11_583_845)));
}

#[test]
fn zero_rate_splits_the_principal_and_the_last_takes_the_remainder() {
    let s = annuity(eur(1_000), Rate::ZERO, 3, date(2026, 1, 10)).unwrap();
    assert_eq!(check(&s, eur(1_000)), eur(333));
    let totals: Vec<i64> = s.instalments.iter().map(|i| i.total.amount_minor()).collect();
    assert_eq!(totals, [333, 333, 334]);
    assert_eq!(s.total_interest(), Some(eur(0)));
    // 14 over 8: ⌊14/8⌋ = 1, the last takes 7 (rounding 1.75 to 2 would leave nothing for it).
    let s = annuity(eur(14), Rate::ZERO, 8, date(2026, 1, 10)).unwrap();
    assert_eq!(check(&s, eur(14)), eur(1));
    assert_eq!(s.instalments[7].total, eur(7));
}

#[test]
fn yen_has_no_minor_digits() {
    let yen = Money::new(1_000_000, Currency::JPY);
    let s = annuity(yen, rate("0.03"), 12, date(2026, 4, 25)).unwrap();
    // 1,000,000 × 0.0025 = 2,500 yen of interest the first month; A = 84,693.8… → 84,694.
    assert_eq!(check(&s, yen), Money::new(84_694, Currency::JPY));
    assert_eq!(s.instalments[0].interest, Money::new(2_500, Currency::JPY));
}

#[test]
fn one_month_term_repays_principal_and_one_month_of_interest() {
    let s = annuity(eur(120_000), rate("0.12"), 1, date(2026, 1, 31)).unwrap();
    check(&s, eur(120_000));
    assert_eq!(s.instalments.len(), 1);
    assert_eq!(s.instalments[0].interest, eur(1_200));
    assert_eq!(s.instalments[0].total, eur(121_200));
}

#[test]
fn due_dates_clamp_to_month_end_from_the_first_due_date() {
    let s = annuity(eur(600_000), rate("0.05"), 6, date(2028, 1, 31)).unwrap();
    let due: Vec<NaiveDate> = s.instalments.iter().map(|i| i.due_on).collect();
    let want = [
        date(2028, 1, 31),
        date(2028, 2, 29),
        date(2028, 3, 31),
        date(2028, 4, 30),
        date(2028, 5, 31),
        date(2028, 6, 30),
    ];
    assert_eq!(due, want);
}

#[test]
fn partial_repayment_lowers_the_instalment_and_keeps_the_dates() {
    let loan = annuity(eur(1_000_000), rate("0.05"), 12, date(2026, 1, 31)).unwrap();
    let after_three = loan.instalments[2].outstanding_after;
    let outstanding = after_three.checked_sub(eur(200_000)).unwrap();
    let rest = after_partial_repayment(outstanding, rate("0.05"), date(2026, 1, 31), 4, 12).unwrap();
    let level = check(&rest, outstanding);
    assert!(level.amount_minor() < loan.instalments[0].total.amount_minor());
    assert_eq!(rest.instalments.len(), 9);
    assert_eq!(rest.instalments[0].number, 4);
    assert_eq!(rest.instalments[0].due_on, date(2026, 4, 30));
    assert_eq!(rest.instalments[8].number, 12);
    assert_eq!(rest.instalments[8].due_on, date(2026, 12, 31));
}

#[test]
fn refuses_bad_inputs() {
    let d = date(2026, 1, 1);
    let r = rate("0.05");
    assert_eq!(annuity(eur(0), r, 12, d), Err(ScheduleError::PrincipalNotPositive));
    assert_eq!(annuity(eur(-5), r, 12, d), Err(ScheduleError::PrincipalNotPositive));
    assert_eq!(annuity(eur(1_000), r, 0, d), Err(ScheduleError::Term));
    assert_eq!(annuity(eur(1_000), r, TERM_MONTHS_MAX + 1, d), Err(ScheduleError::Term));
    assert_eq!(annuity(eur(1_000), rate("1.0001"), 12, d), Err(ScheduleError::RateTooHigh));
    assert_eq!(annuity(eur(11), r, 12, d), Err(ScheduleError::PrincipalTooSmall));
    assert_eq!(annuity(eur(11), Rate::ZERO, 12, d), Err(ScheduleError::PrincipalTooSmall));
    // 360 cents at 30% over 360 months: the interest eats the whole instalment.
    assert_eq!(annuity(eur(360), rate("0.3"), 360, d), Err(ScheduleError::PrincipalTooSmall));
    assert_eq!(after_partial_repayment(eur(1_000), r, d, 0, 12), Err(ScheduleError::Term));
    assert_eq!(after_partial_repayment(eur(1_000), r, d, 13, 12), Err(ScheduleError::Term));
    assert_eq!(annuity(eur(i64::MAX), rate("1"), 1, d), Err(ScheduleError::Overflow));
}

#[test]
fn serde_round_trips_and_refuses_unknown_fields() {
    let s = annuity(eur(100_000), rate("0.05"), 3, date(2026, 1, 31)).unwrap();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(serde_json::from_value::<Schedule>(json.clone()).unwrap(), s);
    let mut extra = json;
    extra["instalments"][0]["fee"] = serde_json::json!("1.00");
    assert!(serde_json::from_value::<Schedule>(extra).is_err());
}

/// An upper bound of `((1 + r)^n − 1) / r` (`n` at a zero rate), in whole units.
fn accumulation_bound(annual_rate: Rate, n: u32) -> i128 {
    let d = i128::from(12 * Rate::ONE.units());
    let big_n = d + i128::from(annual_rate.units());
    (0..n).fold(0_i128, |s, _| (s * big_n + d - 1) / d + 1)
}

proptest! {
    #[test]
    fn schedules_keep_their_invariants(
        principal in 1_i64..=1_000_000_000,
        rate_bps in 0_u64..=3_000,
        term in 1_u32..=TERM_MONTHS_MAX,
    ) {
        let annual = Rate::parse_non_negative(&format!("0.{rate_bps:04}")).unwrap();
        match annuity(eur(principal), annual, term, date(2026, 1, 31)) {
            Ok(s) => {
                prop_assert_eq!(s.instalments.len(), usize::try_from(term).unwrap());
                let level = check(&s, eur(principal));
                let last = s.instalments.last().unwrap().total;
                let gap = i128::from((last.amount_minor() - level.amount_minor()).abs());
                prop_assert!(gap <= accumulation_bound(annual, term), "gap {} for {:?}", gap, annual);
                if annual.is_zero() {
                    prop_assert!(gap < i128::from(term));
                }
            }
            Err(e) => prop_assert_eq!(e, ScheduleError::PrincipalTooSmall),
        }
    }

    #[test]
    fn large_loans_always_have_a_schedule(
        principal in 100_000_000_i64..=10_000_000_000_000,
        rate_bps in 0_u64..=3_000,
        term in 1_u32..=TERM_MONTHS_MAX,
    ) {
        let annual = Rate::parse_non_negative(&format!("0.{rate_bps:04}")).unwrap();
        let s = annuity(eur(principal), annual, term, date(2026, 1, 31));
        prop_assert!(s.is_ok(), "{:?}", s);
    }
}
