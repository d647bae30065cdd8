//! netem's delay tables, made here the way iproute2 makes `normal.dist`, `pareto.dist` and
//! `paretonormal.dist` (its `netem/*.c` generators), so the userspace backend draws from the
//! very tables `tc` loads into the kernel. Generated rather than read from `/usr/lib/tc`: the
//! agent must not depend on where (or whether) a distribution ships them; a test checks they
//! are the same numbers.

use std::sync::OnceLock;

use crate::spec::stochastic::DelayDistribution;

/// Table entries are in units of `sigma / NETEM_DIST_SCALE` (the kernel's constant).
pub const SCALE: f64 = 8192.0;
const TABLE_SIZE: usize = 16384;
/// netem's Pareto shape.
const PARETO_ALPHA: f64 = 3.0;

/// The 4096 entries of one table, or `None` for uniform (no table).
pub fn table(d: DelayDistribution) -> Option<&'static [i16]> {
    static NORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETO: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETONORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    Some(match d {
        DelayDistribution::Uniform => return None,
        DelayDistribution::Normal => NORMAL.get_or_init(|| normal_table().iter().map(|x| clamp(rint(x * SCALE))).collect()),
        DelayDistribution::Pareto => PARETO.get_or_init(|| (0..TABLE_SIZE / 4).map(|k| clamp(pareto_value(k))).collect()),
        DelayDistribution::Paretonormal => PARETONORMAL.get_or_init(|| {
            let normal = normal_table();
            // iproute2 mixes before clamping, and divides as C does (toward zero).
            (0..TABLE_SIZE / 4).map(|k| clamp((rint(normal[k] * SCALE) + 3 * pareto_value(k)) / 4)).collect()
        }),
    })
}

fn rint(v: f64) -> i64 {
    v.round_ties_even() as i64
}

fn clamp(v: i64) -> i16 {
    v.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// The standard normal's quantiles at every fourth of 16384 steps, found as iproute2 finds
/// them: walking x and keeping the last x whose CDF rounds to each step.
fn normal_table() -> Vec<f64> {
    let mut steps = vec![0.0; TABLE_SIZE + 1];
    let mut x = -10.0f64;
    while x < 10.05 {
        let cdf = 0.5 + 0.5 * libm::erf(x / std::f64::consts::SQRT_2);
        if let Some(slot) = usize::try_from(rint(TABLE_SIZE as f64 * cdf)).ok().and_then(|i| steps.get_mut(i)) {
            *slot = x;
        }
        x += 0.00005;
    }
    steps.into_iter().step_by(4).take(TABLE_SIZE / 4).collect()
}

/// Entry `k` of the Pareto table: the quantile at `1 - k/4096`, shifted to mean 0.
fn pareto_value(k: usize) -> i64 {
    let u = (65536 - 16 * k) as f64 / 65536.0;
    let x = 1.0 / u.powf(1.0 / PARETO_ALPHA) - 1.5;
    rint((x * (4.0 / 3.0) * SCALE).min(32767.0))
}

/// A delay `mu ± sigma` shaped by `d`, from one uniform draw `u` in [0, 1), as the kernel's
/// `tabledist` computes it (microseconds; never below zero).
pub fn delay_micros(mu: f64, sigma: f64, d: Option<DelayDistribution>, u: f64) -> f64 {
    if sigma == 0.0 {
        return mu;
    }
    let v = match d.and_then(table) {
        None => mu - sigma + 2.0 * sigma * u,
        Some(t) => mu + sigma * f64::from(t[((u * t.len() as f64) as usize).min(t.len() - 1)]) / SCALE,
    };
    v.max(0.0)
}

/// The `q` quantile (0..1) of the delay `d` gives around `mu ± sigma`: what a measured
/// distribution is compared with.
pub fn quantile_micros(mu: f64, sigma: f64, d: Option<DelayDistribution>, q: f64) -> f64 {
    match d.and_then(table) {
        None => (mu - sigma + 2.0 * sigma * q).max(0.0),
        Some(t) => {
            let mut sorted: Vec<i16> = t.to_vec();
            sorted.sort_unstable();
            let i = ((q * sorted.len() as f64) as usize).min(sorted.len() - 1);
            (mu + sigma * f64::from(sorted[i]) / SCALE).max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables iproute2 installs, where `tc` finds them on Debian.
    fn installed(name: &str) -> Vec<i16> {
        let path = format!("/usr/lib/x86_64-linux-gnu/tc/{name}.dist");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (iproute2 installs it)"));
        text.lines().filter(|l| !l.starts_with('#')).flat_map(str::split_whitespace).map(|w| w.parse().unwrap()).collect()
    }

    #[test]
    fn tables_are_the_ones_tc_loads() {
        for (d, name) in [(DelayDistribution::Normal, "normal"), (DelayDistribution::Pareto, "pareto"), (DelayDistribution::Paretonormal, "paretonormal")] {
            assert_eq!(table(d).unwrap(), installed(name).as_slice(), "{name}");
        }
        assert!(table(DelayDistribution::Uniform).is_none());
    }

    #[test]
    fn normal_quantiles_are_the_normals() {
        // 10 ms ± 2 ms normal: median 10 ms, 84th percentile one sigma up.
        assert!((quantile_micros(10_000.0, 2_000.0, Some(DelayDistribution::Normal), 0.5) - 10_000.0).abs() < 5.0);
        assert!((quantile_micros(10_000.0, 2_000.0, Some(DelayDistribution::Normal), 0.8413) - 12_000.0).abs() < 10.0);
        assert_eq!(delay_micros(1000.0, 5000.0, Some(DelayDistribution::Normal), 0.0), 0.0, "never below zero");
    }
}
