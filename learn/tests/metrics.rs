//! Hand-computed examples for every hold-out metric.

use std::f64::consts::LN_2;

use proptest::prelude::*;
use taskcast_learn::judge::metrics::{
    MetricSet, MetricsAccumulator, accuracy, auc, brier, ece, interval_coverage, log_loss,
    mae_log_seconds, mae_seconds, median_ae_seconds, quantile, quantile_spread, std_dev,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn assert_close(actual: Option<f64>, expected: f64) {
    let a = actual.expect("metric should be defined");
    assert!(close(a, expected), "got {a}, expected {expected}");
}

#[test]
fn auc_perfect_reversed_and_ties() {
    let y = [false, false, true, true];
    assert_close(auc(&[0.1, 0.2, 0.8, 0.9], &y), 1.0);
    assert_close(auc(&[0.9, 0.8, 0.2, 0.1], &y), 0.0);
    assert_close(auc(&[0.5; 4], &y), 0.5);
}

#[test]
fn auc_small_cases_by_hand() {
    // Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs won: (0.35>0.1), (0.8>0.1),
    // (0.8>0.4); lost: (0.35<0.4). 3 of 4.
    assert_close(
        auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
        0.75,
    );
    // Positives 0.5, 0.9; negatives 0.5, 0.2. The 0.5/0.5 pair is a tie worth
    // one half: (0.5 + 1 + 1 + 1) / 4.
    assert_close(
        auc(&[0.5, 0.5, 0.2, 0.9], &[true, false, false, true]),
        0.875,
    );
}

#[test]
fn auc_undefined_cases() {
    assert_eq!(auc(&[0.2, 0.7], &[true, true]), None);
    assert_eq!(auc(&[0.2, 0.7], &[false, false]), None);
    assert_eq!(auc(&[], &[]), None);
    assert_eq!(auc(&[0.2, 0.7], &[true]), None);
}

fn brute_auc(p: &[f64], y: &[bool]) -> Option<f64> {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (i, &pi) in p.iter().enumerate() {
        for (j, &pj) in p.iter().enumerate() {
            if y[i] && !y[j] {
                pairs += 1.0;
                wins += if pi > pj {
                    1.0
                } else if pi == pj {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    (pairs > 0.0).then(|| wins / pairs)
}

proptest! {
    #[test]
    fn auc_matches_pairwise_definition(
        rows in prop::collection::vec((0u8..6, any::<bool>()), 1..40)
    ) {
        // Few distinct scores so ties are common.
        let p: Vec<f64> = rows.iter().map(|&(s, _)| f64::from(s) / 5.0).collect();
        let y: Vec<bool> = rows.iter().map(|&(_, c)| c).collect();
        match (auc(&p, &y), brute_auc(&p, &y)) {
            (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-9, "{a} vs {b}"),
            (a, b) => prop_assert_eq!(a, b),
        }
    }
}

#[test]
fn log_loss_by_hand() {
    assert_close(log_loss(&[0.5], &[true]), LN_2);
    assert_close(log_loss(&[0.5, 0.5], &[true, false]), LN_2);
    let expected = -(0.8f64.ln() + 0.7f64.ln()) / 2.0;
    assert_close(log_loss(&[0.8, 0.3], &[true, false]), expected);
    // Clipping keeps a certain mistake finite: -ln(1e-15).
    let clipped = log_loss(&[0.0], &[true]).unwrap();
    assert!((clipped - 1e-15f64.ln().abs()).abs() < 1e-6, "{clipped}");
    let clipped = log_loss(&[1.0], &[false]).unwrap();
    assert!(clipped.is_finite() && clipped > 30.0, "{clipped}");
    assert_eq!(log_loss(&[], &[]), None);
}

#[test]
fn brier_by_hand() {
    // (0.2² + 0.3²) / 2
    assert_close(brier(&[0.8, 0.3], &[true, false]), 0.065);
    assert_close(brier(&[1.0, 0.0], &[true, false]), 0.0);
    assert_close(brier(&[0.5], &[false]), 0.25);
    assert_eq!(brier(&[0.5], &[]), None);
}

#[test]
fn ece_by_hand() {
    // Perfectly calibrated bins: 0.25 with 1 of 4 correct, 0.75 with 3 of 4.
    let p = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75];
    let y = [true, false, false, false, true, true, true, false];
    assert_close(ece(&p, &y, 10), 0.0);
    // Two bins each off by 0.1, each half the rows.
    assert_close(
        ece(&[0.1, 0.1, 0.9, 0.9], &[false, false, true, true], 10),
        0.1,
    );
    // One bin of weight 1/4 off by 0.6 (p 0.6, y 0), one of weight 3/4 off by
    // |0.2 − 1/3|.
    let p = [0.6, 0.2, 0.2, 0.2];
    let y = [false, true, false, false];
    assert_close(ece(&p, &y, 10), 0.25 * 0.6 + 0.75 * (1.0 / 3.0 - 0.2));
    // p = 1 lands in the last bin rather than out of range.
    assert_close(ece(&[1.0], &[true], 10), 0.0);
    assert_eq!(ece(&[0.5], &[true], 0), None);
}

#[test]
fn accuracy_by_hand() {
    // Predictions: 0.5 → correct, 0.49 → wrong, 0.9 → correct, 0.1 → wrong.
    assert_close(
        accuracy(&[0.5, 0.49, 0.9, 0.1], &[true, false, false, false]),
        0.75,
    );
    assert_eq!(accuracy(&[], &[]), None);
}

#[test]
fn time_errors_by_hand() {
    let pred = [10.0, 20.0, 30.0];
    let actual = [12.0, 20.0, 60.0];
    assert_close(mae_seconds(&pred, &actual), 32.0 / 3.0);
    assert_close(median_ae_seconds(&pred, &actual), 2.0);
    // Even count: mean of the middle errors 2 and 5.
    assert_close(
        median_ae_seconds(&[10.0, 20.0, 30.0, 40.0], &[12.0, 25.0, 60.0, 40.0]),
        3.5,
    );
    // ln(max(0.5, 1)) = ln 1 = 0 on both sides; |1 − 0| on the second row.
    assert_close(
        mae_log_seconds(&[0.5, std::f64::consts::E], &[1.0, 1.0]),
        0.5,
    );
    assert_close(mae_log_seconds(&[20.0], &[10.0]), LN_2);
    assert_eq!(mae_seconds(&[1.0], &[1.0, 2.0]), None);
}

#[test]
fn interval_coverage_is_inclusive() {
    let low = [1.0; 4];
    let high = [2.0; 4];
    assert_close(interval_coverage(&low, &high, &[0.5, 1.0, 2.0, 3.0]), 0.5);
    assert_eq!(
        interval_coverage(&low, &high[..3], &[0.5, 1.0, 2.0, 3.0]),
        None
    );
    assert_eq!(interval_coverage(&[], &[], &[]), None);
}

#[test]
fn spread_helpers() {
    // Mean 5, squared deviations 9,1,1,1,0,0,4,16 → variance 4.
    assert_close(std_dev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), 2.0);
    assert_close(std_dev(&[0.7; 10]), 0.0);
    assert_eq!(std_dev(&[]), None);
    assert_eq!(std_dev(&[0.5, f64::NAN]), None);

    let v: Vec<f64> = (0..=10).map(f64::from).collect();
    assert_close(quantile(&v, 0.5), 5.0);
    assert_close(quantile(&[1.0, 2.0], 0.5), 1.5);
    assert_close(quantile(&v, 0.0), 0.0);
    assert_close(quantile(&v, 1.0), 10.0);
    assert_close(quantile_spread(&v, 0.1, 0.9), 8.0);
    assert_close(quantile_spread(&[0.3; 7], 0.1, 0.9), 0.0);
    assert_eq!(quantile_spread(&v, 0.9, 0.1), None);
    assert_eq!(quantile(&v, 1.5), None);
    assert_eq!(quantile_spread(&[], 0.1, 0.9), None);
}

#[test]
fn accumulator_matches_pure_functions() {
    let p = [0.1, 0.4, 0.35, 0.8];
    let y = [false, false, true, true];
    let mut acc = MetricsAccumulator::new();
    assert!(acc.is_empty());
    assert_eq!(acc.finish(), MetricSet::default());
    // Only rows 0 and 2 have both a predicted and an actual time; row 1 has
    // a prediction but no actual, row 3 an actual but no prediction.
    acc.push(p[0], y[0], Some((5.0, 10.0, 20.0)), Some(12.0));
    acc.push(p[1], y[1], Some((5.0, 10.0, 20.0)), None);
    acc.push(p[2], y[2], Some((5.0, 10.0, 20.0)), Some(40.0));
    acc.push(p[3], y[3], None, Some(7.0));
    assert_eq!(acc.len(), 4);
    assert_eq!(acc.timed_len(), 2);

    let m = acc.finish();
    assert_close(m.auc, 0.75);
    assert_eq!(m.logloss, log_loss(&p, &y));
    assert_eq!(m.brier, brier(&p, &y));
    assert_eq!(m.ece, ece(&p, &y, 10));
    assert_close(m.accuracy, 0.75);
    assert_close(m.mae_seconds, (2.0 + 30.0) / 2.0);
    assert_close(m.median_ae_seconds, 16.0);
    assert_close(m.mae_log_seconds, ((12f64 / 10.0).ln() + 4f64.ln()) / 2.0);
    assert_close(m.interval_coverage, 0.5);

    let map = m.to_map();
    assert_eq!(map.len(), 9);
    assert_eq!(map["auc"], 0.75);
    assert!(map.contains_key("logloss") && map.contains_key("interval_coverage"));
}

#[test]
fn accumulator_without_times_leaves_time_fields_out() {
    let mut acc = MetricsAccumulator::new();
    acc.push(0.9, true, None, None);
    acc.push(0.8, true, Some((1.0, 2.0, 3.0)), Some(f64::NAN));
    let m = acc.finish();
    // One class only: AUC undefined, the rest measured.
    assert_eq!(m.auc, None);
    assert!(m.logloss.is_some() && m.accuracy.is_some());
    assert_eq!(m.mae_seconds, None);
    assert_eq!(m.median_ae_seconds, None);
    assert_eq!(m.mae_log_seconds, None);
    assert_eq!(m.interval_coverage, None);
    let keys: Vec<String> = m.to_map().into_keys().collect();
    assert_eq!(keys, ["accuracy", "brier", "ece", "logloss"]);
}

#[test]
fn metric_set_serializes_field_names() {
    let m = MetricSet {
        auc: Some(0.5),
        ..Default::default()
    };
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["auc"], 0.5);
    assert!(json["logloss"].is_null());
}
