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

    let out = ok(&["eval", "--data", s(&csv), "--json"]);
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
    for sub in ["serve", "import", "train", "eval", "simulate"] {
        assert!(text.contains(sub), "{sub} missing from --help");
        let out = ok(&[sub, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Usage:"), "{sub}: {help}");
    }
    // An unknown subcommand is an error, not a silent success.
    assert!(!trainer(&["frobnicate"]).status.success());
}
