//! Calendar functions of a timestamp in UTC: `day_of_month`, `day_of_week`, `day_of_year`,
//! `days_in_month`, `hour`, `minute`, `month`, `year`.

use super::*;

/// This family's function `c`, or `None` when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let name = c.func.name;
    let value = match name {
        "day_of_month" => date_part(ev, c, s, |d| f64::from(d.day())),
        "day_of_week" => date_part(ev, c, s, |d| {
            f64::from(d.weekday().number_days_from_sunday())
        }),
        "day_of_year" => date_part(ev, c, s, |d| f64::from(d.ordinal())),
        "days_in_month" => date_part(ev, c, s, days_in_month),
        "hour" => date_part(ev, c, s, |d| f64::from(d.hour())),
        "minute" => date_part(ev, c, s, |d| f64::from(d.minute())),
        "month" => date_part(ev, c, s, |d| f64::from(u8::from(d.month()))),
        "year" => date_part(ev, c, s, |d| f64::from(d.year())),
        _ => return Ok(None),
    };
    value.map(Some)
}

pub(super) fn date_part(
    ev: &mut Evaluator<'_>,
    c: &Call,
    s: &Steps,
    f: fn(time::OffsetDateTime) -> f64,
) -> Result<Val> {
    let convert = move |v: f64| {
        if v.is_nan() || v.is_infinite() {
            return f64::NAN;
        }
        match time::OffsetDateTime::from_unix_timestamp(v as i64) {
            Ok(d) => f(d),
            Err(_) => f64::NAN,
        }
    };
    match c.args.args.first() {
        None => {
            let mut row = Row::new(Labels::empty(), s.n);
            for i in 0..s.n {
                row.set(i, convert(s.t(i) as f64 / 1000.0));
            }
            Ok(Val::Vector(vec![row]))
        }
        Some(a) => {
            let rows = vector_arg(ev, a, s)?;
            map_values(rows, convert)
        }
    }
}

pub(super) fn days_in_month(d: time::OffsetDateTime) -> f64 {
    f64::from(d.month().length(d.year()))
}
