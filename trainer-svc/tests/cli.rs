//! The `trainer-svc` binary's offline commands, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

use taskcast_contract::Artifact;
use trainer_svc::db::Db;
use trainer_svc::db::test_support::TestDb;

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer-svc"))
        .args(args)
        .env_remove("TASKCAST_DATABASE_URL")
        .output()
        .expect("run trainer-svc")
}

fn ok(args: &[&str]) -> Output {
    let out = trainer(args);
    assert!(
        out.status.success(),
        "trainer-svc {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The three plots in `dir`, each a non-empty PNG and SVG.
fn check_plots(dir: &Path) {
    for stem in ["reliability", "time", "learner_spread"] {
        let png = std::fs::read(dir.join(format!("{stem}.png")))
            .unwrap_or_else(|e| panic!("{}/{stem}.png: {e}", dir.display()));
        assert!(
            png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{}/{stem}.png is not a PNG",
            dir.display()
        );
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg")))
            .unwrap_or_else(|e| panic!("{}/{stem}.svg: {e}", dir.display()));
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{}/{stem}.svg is not an SVG document",
            dir.display()
        );
    }
}

#[test]
fn simulate_train_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tmp.csv");
    let onnx = dir.path().join("m.onnx");
    ok(&[
        "simulate",
        "--out",
        s(&csv),
        "--learners",
        "60",
        "--attempts",
        "40",
        "--seed",
        "3",
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("user_id,item_id,topic,correct,seconds,ts,difficulty\n"));
    let rows = text.lines().count() - 1;
    assert!(rows > 1000, "{rows} rows");

    let out = ok(&["train", "--data", s(&csv), "--out", s(&onnx)]);
    let bytes = std::fs::read(&onnx).expect("model file written");
    let artifact = Artifact::parse(&bytes).expect("a contract-valid artifact");
    assert_eq!(artifact.metadata.family, "linear");
    assert!(artifact.metadata.training_rows > 0);
    assert!(artifact.metadata.training_rows < rows as u64);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&artifact.sha256), "{stdout}");
    assert!(stdout.contains("baseline_population"), "{stdout}");

    let plots = dir.path().join("plots");
    let out = ok(&["eval", "--data", s(&csv), "--json", "--plots", s(&plots)]);
    for family in ["linear", "mlp"] {
        check_plots(&plots.join(family));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "eval --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(v["rows"].as_u64(), Some(rows as u64));
    assert!(v["holdout_rows"].as_u64().unwrap() > 0);
    for name in [
        "linear",
        "baseline_population",
        "baseline_learner",
        "baseline_topic",
    ] {
        let m = &v["models"][name];
        assert!(m.is_object(), "models.{name} in {v}");
        assert!(m["auc"].is_f64() && m["logloss"].is_f64(), "{name}: {m}");
        assert!(m["mae_log_seconds"].is_f64(), "{name}: {m}");
    }
    assert!(
        v["models"]["linear"]["logloss"].as_f64()
            < v["models"]["baseline_population"]["logloss"].as_f64()
    );
}

#[tokio::test]
async fn import_with_malformed_line_7_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("user_id,item_id,topic,correct,seconds,ts\n");
    for i in 0..5 {
        csv.push_str(&format!("u1,i{i},t,1,2.5,{i}\n"));
    }
    csv.push_str("u1,i9,t,maybe,2.5,9\n"); // line 7
    for i in 10..20 {
        csv.push_str(&format!("u2,i{i},t,0,,{i}\n"));
    }
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, csv).unwrap();
    let dbs = TestDb::all()
        .await
        .expect("test databases (is PostgreSQL running?)");
    for t in dbs {
        // Create the tables first so "empty" is checked, not "missing".
        let db = Db::connect(t.url()).await.unwrap();
        let out = trainer(&["import", "--database-url", t.url(), "--data", s(&bad)]);
        assert!(
            !out.status.success(),
            "{}: import must fail",
            t.backend_name()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("line 7"), "{}: {stderr}", t.backend_name());
        assert_eq!(db.count_tasks().await.unwrap(), 0, "{}", t.backend_name());
        db.close().await.unwrap();
        t.cleanup().await.unwrap();
    }
}

#[test]
fn help_for_every_subcommand() {
    let top = ok(&["--help"]);
    let text = String::from_utf8_lossy(&top.stdout);
    for sub in ["serve", "import", "train", "eval", "simulate", "report"] {
        assert!(text.contains(sub), "{sub} missing from --help");
        let out = ok(&[sub, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Usage:"), "{sub}: {help}");
    }
    // An unknown subcommand is an error, not a silent success.
    assert!(!trainer(&["frobnicate"]).status.success());
}

/// `report` on a database where a backend stored predictions: text, JSON and
/// plots, and a non-zero exit for an unknown version.
#[tokio::test]
async fn report_json_text_and_plots() {
    use trainer_svc::db::StoredPrediction;
    let dir = tempfile::tempdir().unwrap();
    let t = TestDb::sqlite().unwrap();
    let db = Db::connect(t.url()).await.unwrap();
    let mut sim = trainer_svc::sim::Simulator::new(trainer_svc::sim::SimConfig {
        seed: 5,
        learners: 30,
        attempts_per_learner: 20,
        ..Default::default()
    })
    .unwrap();
    // A backend that stored a constant prediction from a broken model.
    let rows: Vec<_> = sim
        .generate()
        .into_iter()
        .map(|r| {
            let p = StoredPrediction {
                p_correct: 0.43,
                seconds: Some(25.0),
                seconds_low: Some(10.0),
                seconds_high: Some(60.0),
                model_version: "broken-v1".into(),
            };
            (r, p)
        })
        .collect();
    let n = db.insert_outcomes(&rows).await.unwrap();
    db.close().await.unwrap();

    let out = ok(&["report", "--database-url", t.url(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(v["rows_scanned"].as_u64(), Some(n));
    let version = &v["versions"][0];
    assert_eq!(version["version"], "broken-v1");
    assert_eq!(version["state"], "unregistered");
    assert_eq!(version["live"]["rows"].as_u64(), Some(n));
    assert_eq!(version["live"]["auc"].as_f64(), Some(0.5));
    assert!(version["live"]["interval_coverage"].is_f64(), "{version}");
    assert_eq!(version["overall"]["distinct"].as_f64(), Some(1.0));
    assert!(
        version["stuck_learners"].as_u64().unwrap() > 20,
        "{version}"
    );
    assert_eq!(version["drift"], true, "most learners stuck: {version}");

    let plots = dir.path().join("plots");
    let out = ok(&[
        "report",
        "--database-url",
        t.url(),
        "--version",
        "broken-v1",
        "--stuck-window",
        "3",
        "--plots",
        s(&plots),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("version broken-v1"), "{text}");
    assert!(
        text.contains("DRIFT: predictions moved less than 0.01"),
        "{text}"
    );
    check_plots(&plots.join("broken-v1"));

    let out = trainer(&["report", "--database-url", t.url(), "--version", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
