//! The `trainer-svc` binary's offline commands, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

use taskcast_contract::Artifact;
use taskcast_testdb::TestDb;
use trainer_svc::db::Db;

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
    assert!(text.starts_with("user_id,item_id,topic,correct,seconds,ts,difficulty,started_at\n"));
    let rows = text.lines().count() - 1;
    assert!(rows > 1000, "{rows} rows");

    let out = ok(&["train", "--data", s(&csv), "--out", s(&onnx)]);
    let bytes = std::fs::read(&onnx).expect("model file written");
    let artifact = Artifact::parse(&bytes).expect("a contract-valid artifact");
    // `auto`, the default, names the family it chose and says why.
    assert!(
        ["linear", "mlp", "pretrained"].contains(&artifact.metadata.family.as_str()),
        "{}",
        artifact.metadata.family
    );
    assert!(artifact.metadata.training_rows > 0);
    assert!(artifact.metadata.training_rows < rows as u64);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&artifact.sha256), "{stdout}");
    assert!(stdout.contains("baseline_population"), "{stdout}");
    assert!(stdout.contains("auto chose"), "{stdout}");

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

/// `eval --model`: an artifact scored on a file's hold-out as it would
/// serve. On the file it was trained on it scores exactly what the family's
/// own fit scores there (same rows, same priors); on another file (other
/// learners, the artifact's priors, not the file's) it still scores, beside
/// that file's baselines; a file that is no model is refused by name.
#[test]
fn eval_scores_an_existing_model() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    let onnx = dir.path().join("m.onnx");
    for (csv, seed) in [(&a, "3"), (&b, "4")] {
        let args = ["simulate", "--out", s(csv), "--learners", "40"];
        ok(&[&args[..], &["--attempts", "40", "--seed", seed]].concat());
    }
    ok(&[
        "train",
        "--data",
        s(&a),
        "--family",
        "linear",
        "--out",
        s(&onnx),
    ]);
    let version = Artifact::parse(&std::fs::read(&onnx).unwrap())
        .unwrap()
        .metadata
        .version;
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_slice(&ok(args).stdout).expect("eval --json prints JSON")
    };
    let same = json(&[
        "eval",
        "--data",
        s(&a),
        "--json",
        "--family",
        "linear",
        "--model",
        s(&onnx),
    ]);
    let scored = &same["models"][format!("model:{version}")];
    for metric in ["logloss", "auc", "ece", "mae_log_seconds"] {
        let (m, f) = (
            scored[metric].as_f64(),
            same["models"]["linear"][metric].as_f64(),
        );
        assert!(m.is_some(), "{metric} of the scored model in {same}");
        assert!(
            (m.unwrap() - f.unwrap()).abs() < 1e-6,
            "{metric}: the artifact scores {m:?} on its own training file, its fit {f:?}"
        );
    }

    let other = json(&["eval", "--data", s(&b), "--json", "--model", s(&onnx)]);
    let models = other["models"].as_object().expect("models");
    assert!(!models.contains_key("linear"), "no family trained: {other}");
    assert!(models.contains_key("baseline_learner"), "{other}");
    let ll = models[&format!("model:{version}")]["logloss"]
        .as_f64()
        .unwrap();
    assert!(
        ll.is_finite() && ll < 0.69,
        "log loss on unseen learners {ll}"
    );

    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let out = trainer(&["eval", "--data", s(&b), "--model", s(&junk)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("junk.onnx"), "{err}");
}

/// The first `learners` learners (file order) of a shared dataset as CSV
/// lines, header first, leaving out the few lines with quoted fields so that
/// callers can split on commas. The shared data is read from `$TASKCAST_DATA_DIR`
/// (default `/work/shared/data`, as the end-to-end data-shape test reads it).
fn shared_learners(file: &str, learners: usize) -> Vec<String> {
    use std::io::BufRead;
    let dir = std::env::var("TASKCAST_DATA_DIR").unwrap_or_else(|_| "/work/shared/data".into());
    let path = Path::new(&dir).join(file);
    let gz = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set TASKCAST_DATA_DIR to the shared datasets' folder)",
            path.display()
        )
    });
    let mut lines = std::io::BufReader::new(flate2::read::GzDecoder::new(gz)).lines();
    let header = lines.next().unwrap().unwrap();
    let user = header.split(',').position(|c| c == "user_id").unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![header];
    for line in lines {
        let line = line.unwrap();
        if line.contains('"') {
            continue;
        }
        let id = line.split(',').nth(user).unwrap().to_owned();
        if !seen.contains(&id) && seen.len() == learners {
            continue;
        }
        seen.insert(id);
        out.push(line);
    }
    out
}

/// `pretrain` as the README runs it, on real learners (two files of the
/// shared assist2009_rt): weights written as Rust source whose every weight
/// is named by a feature, the same bytes on a rerun, and beside them an
/// artifact whose first contact with a learner goes the right way. Weights
/// from data where practice makes learners worse fail those checks and are
/// not written.
#[test]
fn pretrain_writes_checked_reproducible_weights() {
    let dir = tempfile::tempdir().unwrap();
    let lines = shared_learners("assist2009_rt.csv.gz", 200);
    let header = &lines[0];
    let user = header.split(',').position(|c| c == "user_id").unwrap();
    let mut learners = Vec::<String>::new();
    let (mut a, mut b) = (vec![header.clone()], vec![header.clone()]);
    for line in &lines[1..] {
        let id = line.split(',').nth(user).unwrap();
        if !learners.iter().any(|l| l == id) {
            learners.push(id.to_owned());
        }
        let half = if learners.len() <= 100 {
            &mut a
        } else {
            &mut b
        };
        half.push(line.clone());
    }
    let (a_csv, b_csv) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    std::fs::write(&a_csv, a.join("\n") + "\n").unwrap();
    std::fs::write(&b_csv, b.join("\n") + "\n").unwrap();
    let run = |name: &str| {
        let (rs, onnx) = (
            dir.path().join(format!("{name}.rs")),
            dir.path().join(format!("{name}.onnx")),
        );
        let args = ["pretrain", "--data", s(&a_csv), "--data", s(&b_csv)];
        let out = ok(&[&args[..], &["--out", s(&rs), "--onnx", s(&onnx)]].concat());
        assert!(
            stdout(&out).contains("--priors both on a.csv, b.csv"),
            "{}",
            stdout(&out)
        );
        (
            std::fs::read_to_string(rs).unwrap(),
            std::fs::read(onnx).unwrap(),
        )
    };
    let (source, onnx) = run("first");
    assert_eq!(run("again").0, source, "pretrain is not reproducible");
    let weights: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("(\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(weights.len() > 10, "{source}");
    for name in weights {
        assert!(
            taskcast_contract::features::feature_index(name).is_some(),
            "{name} is not a feature"
        );
    }
    let model = taskcast_contract::linear::LinearModel::from_onnx(&onnx).expect("linear artifact");
    let failures = taskcast_contract::first_contact::check(|row| model.predict(row));
    assert!(failures.is_empty(), "{failures:#?}");

    // The same learners, right for their first 20 attempts and wrong after:
    // the fit learns that practice lowers p, and the checks refuse it.
    let correct = header.split(',').position(|c| c == "correct").unwrap();
    let mut attempts = std::collections::HashMap::<String, usize>::new();
    let mut flipped = vec![header.clone()];
    for line in &a[1..] {
        let mut f: Vec<&str> = line.split(',').collect();
        let n = attempts.entry(f[user].to_owned()).or_default();
        *n += 1;
        f[correct] = if *n <= 20 { "1" } else { "0" };
        flipped.push(f.join(","));
    }
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, flipped.join("\n") + "\n").unwrap();
    let rs = dir.path().join("bad.rs");
    let out = trainer(&["pretrain", "--data", s(&bad), "--out", s(&rs)]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("first-contact checks"),
        "{}",
        stderr(&out)
    );
    assert!(!rs.exists(), "refused weights were written");
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
        assert!(
            stderr.contains("line 7, column `correct`") && stderr.contains("\"maybe\""),
            "{}: {stderr}",
            t.backend_name()
        );
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
    // The ts forms and the bad-row policy are documented where they apply.
    for sub in ["import", "train", "eval"] {
        let help = stdout(&ok(&[sub, "--help"]));
        assert!(
            help.contains("--ts-unit <TS_UNIT>") && help.contains("1414749956.58917"),
            "{sub}: {help}"
        );
    }
    assert!(stdout(&ok(&["import", "--help"])).contains("--skip-bad-rows"));
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
    let mut sim = taskcast_sim::Simulator::new(taskcast_sim::SimConfig {
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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Simulated learners' rows, as a real export writes them.
fn sim_rows(learners: usize, attempts: usize) -> Vec<taskcast_contract::TaskRow> {
    taskcast_sim::Simulator::new(taskcast_sim::SimConfig {
        seed: 21,
        learners,
        attempts_per_learner: attempts,
        ..Default::default()
    })
    .unwrap()
    .generate()
}

/// One CSV line of `r` with `ts` as given (the simulator's fields need no quoting).
fn csv_line(r: &taskcast_contract::TaskRow, ts: &str) -> String {
    let line = format!(
        "{},{},{},{},{},{ts}",
        r.user_id,
        r.item_id.as_deref().unwrap_or(""),
        r.topic,
        u8::from(r.correct),
        r.seconds.map(|s| s.to_string()).unwrap_or_default(),
    );
    assert_eq!(line.matches(',').count(), 5, "{line}");
    line
}

/// Fractional Unix seconds the way logging code writes them, with digits
/// below the millisecond that must be dropped.
fn fractional_seconds(ms: i64) -> String {
    format!("{}.{:03}17", ms.div_euclid(1000), ms.rem_euclid(1000))
}

const HEADER: &str = "user_id,item_id,topic,correct,seconds,ts";

/// The completed_at of every row in the database, in scan order.
async fn stored_ms(url: &str) -> Vec<(String, i64)> {
    let db = Db::connect(url).await.unwrap();
    let mut pager = db.scan_tasks(10_000, None);
    let mut out = Vec::new();
    while let Some(page) = pager.next_page().await.unwrap() {
        out.extend(
            page.into_iter()
                .map(|(_, r)| (r.user_id, r.completed_at_ms)),
        );
    }
    db.close().await.unwrap();
    out
}

/// The export: every timestamp fractional. Import takes every row,
/// to the millisecond, and train trains on them.
#[tokio::test]
async fn fractional_unix_timestamps_import_and_train() {
    let dir = tempfile::tempdir().unwrap();
    let rows = sim_rows(40, 30);
    let mut text = format!("{HEADER}\n");
    for r in &rows {
        text.push_str(&csv_line(r, &fractional_seconds(r.completed_at_ms)));
        text.push('\n');
    }
    let csv = dir.path().join("export.csv");
    std::fs::write(&csv, text).unwrap();
    let n = rows.len();

    let t = TestDb::sqlite().unwrap();
    let out = ok(&["import", "--database-url", t.url(), "--data", s(&csv)]);
    let expected = format!("read {n} rows; imported {n}; rejected 0\n");
    assert!(stdout(&out).contains(&expected), "{}", stdout(&out));
    let mut want: Vec<(String, i64)> = rows
        .iter()
        .map(|r| (r.user_id.clone(), r.completed_at_ms))
        .collect();
    want.sort();
    assert_eq!(stored_ms(t.url()).await, want);
    t.cleanup().await.unwrap();

    let onnx = dir.path().join("m.onnx");
    let out = ok(&["train", "--data", s(&csv), "--out", s(&onnx)]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("read {n} rows; used {n}; rejected 0\n")),
        "{text}"
    );
    assert!(text.contains(&format!("rows {n}, hold-out")), "{text}");
    let artifact = Artifact::parse(&std::fs::read(&onnx).unwrap()).unwrap();
    assert!(artifact.metadata.training_rows > 0);
}

/// A file with a few bad lines among good ones: `import` refuses it naming
/// the first; `--skip-bad-rows` imports the rest and lists the bad ones by
/// reason with their lines; `train` and `eval` print the same summary.
#[tokio::test]
async fn bad_lines_refused_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rows = sim_rows(40, 30);
    // After which good row each bad line goes.
    let bad = [
        (10, "learner-x,i,t,1,2.5,yesterday"),
        (50, "learner-x,i,t,maybe,2.5,1414749956.5"),
        (51, ",i,t,1,2.5,1414749956.5"),
        (300, "learner-x,i,t,1,2.5,"),
        (700, "learner-x,i,t,1,2.5,31/10/2014 10:05"),
    ];
    let mut text = format!("{HEADER}\n");
    let mut line = 1;
    let mut bad_lines = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        text.push_str(&csv_line(r, &fractional_seconds(r.completed_at_ms)));
        text.push('\n');
        line += 1;
        for (_, b) in bad.iter().filter(|(after, _)| *after == i) {
            text.push_str(b);
            text.push('\n');
            line += 1;
            bad_lines.push(line);
        }
    }
    assert_eq!(bad_lines.len(), bad.len());
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, text).unwrap();
    let good = rows.len();
    let read = good + bad.len();
    let [l_ts, l_correct, l_user, l_empty, l_ts2] = bad_lines[..] else {
        unreachable!()
    };
    let reasons = format!(
        "  ts: not Unix seconds, RFC 3339 or YYYY-MM-DD HH:MM:SS[.f] → 2 (lines {l_ts}, {l_ts2}; first \"yesterday\")\n\
         \x20 correct: not 0, 1, true or false → 1 (line {l_correct}: \"maybe\")\n\
         \x20 user_id: empty → 1 (line {l_user}: \"\")\n\
         \x20 ts: empty (ts is required) → 1 (line {l_empty}: \"\")\n"
    );

    let t = TestDb::sqlite().unwrap();
    let out = trainer(&["import", "--database-url", t.url(), "--data", s(&csv)]);
    assert!(!out.status.success(), "import must refuse the file");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("line {l_ts}, column `ts`")) && err.contains("\"yesterday\""),
        "{err}"
    );
    assert!(err.contains("nothing imported; --skip-bad-rows"), "{err}");
    assert!(stored_ms(t.url()).await.is_empty());

    let out = ok(&[
        "import",
        "--database-url",
        t.url(),
        "--data",
        s(&csv),
        "--skip-bad-rows",
    ]);
    let summary = format!("read {read} rows; imported {good}; rejected 5:\n{reasons}");
    assert!(stdout(&out).contains(&summary), "{}", stdout(&out));
    assert_eq!(stored_ms(t.url()).await.len(), good);
    t.cleanup().await.unwrap();

    let used = format!("read {read} rows; used {good}; rejected 5:\n{reasons}");
    let onnx = dir.path().join("m.onnx");
    let out = ok(&["train", "--data", s(&csv), "--out", s(&onnx)]);
    assert!(stdout(&out).contains(&used), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("rows {good}, hold-out")),
        "{}",
        stdout(&out)
    );

    let out = ok(&["eval", "--data", s(&csv), "--family", "linear"]);
    assert!(stdout(&out).contains(&used), "{}", stdout(&out));
    // With --json the summary goes to stderr and its figures into the JSON.
    let out = ok(&["eval", "--data", s(&csv), "--family", "linear", "--json"]);
    assert!(stderr(&out).contains(&used), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"].as_u64(), Some(good as u64));
    assert_eq!(v["input"]["rows_read"].as_u64(), Some(read as u64));
    assert_eq!(v["input"]["rows_rejected"].as_u64(), Some(5));
    assert_eq!(v["input"]["rejected"][0]["count"].as_u64(), Some(2));
    assert_eq!(
        v["input"]["rejected"][0]["first_lines"],
        serde_json::json!([l_ts, l_ts2])
    );
}

/// Unix milliseconds only by the flag: without it the values are out of
/// range as seconds and the message says which flag reads them.
#[tokio::test]
async fn ts_unit_ms() {
    let dir = tempfile::tempdir().unwrap();
    let rows = sim_rows(30, 30);
    let mut text = format!("{HEADER}\n");
    for r in &rows {
        text.push_str(&csv_line(r, &r.completed_at_ms.to_string()));
        text.push('\n');
    }
    let csv = dir.path().join("ms.csv");
    std::fs::write(&csv, text).unwrap();
    let n = rows.len();

    let t = TestDb::sqlite().unwrap();
    let out = trainer(&["import", "--database-url", t.url(), "--data", s(&csv)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("line 2, column `ts`") && err.contains("--ts-unit ms"),
        "{err}"
    );
    let out = ok(&[
        "import",
        "--database-url",
        t.url(),
        "--data",
        s(&csv),
        "--ts-unit",
        "ms",
    ]);
    assert!(
        stdout(&out).contains(&format!("imported {n}; rejected 0")),
        "{}",
        stdout(&out)
    );
    let mut want: Vec<(String, i64)> = rows
        .iter()
        .map(|r| (r.user_id.clone(), r.completed_at_ms))
        .collect();
    want.sort();
    assert_eq!(stored_ms(t.url()).await, want);
    t.cleanup().await.unwrap();

    // train without the flag: every row rejected, and the error agrees with
    // the summary instead of claiming "0 rows skipped".
    let onnx = dir.path().join("m.onnx");
    let out = trainer(&["train", "--data", s(&csv), "--out", s(&onnx)]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains(&format!("read {n} rows; used 0; rejected {n}:")),
        "{text}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "no usable training rows: all {n} rows read were rejected"
        )),
        "{err}"
    );
    assert!(!err.contains("0 rows skipped"), "{err}");
    assert!(!onnx.exists());

    let out = ok(&[
        "train",
        "--data",
        s(&csv),
        "--out",
        s(&onnx),
        "--ts-unit",
        "ms",
    ]);
    assert!(
        stdout(&out).contains(&format!("read {n} rows; used {n}; rejected 0")),
        "{}",
        stdout(&out)
    );
    assert!(onnx.exists());
}
