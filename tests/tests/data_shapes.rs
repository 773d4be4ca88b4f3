//! The data-shape matrix (issue 11): every model family on every shape of
//! data an app may have, through the real binaries. Each shape is built here
//! (from `trainer-svc simulate` and from a slice of the shared
//! `assist2009_rt` data, transformed in Rust), imported with `trainer-svc
//! import`, and trained with `trainer-svc train --family F`. A shape either
//! trains, exports, verifies and is judged by the gate with a reason, or is
//! refused with one message that says what is missing; which one is decided
//! per shape below from what a user needs. A subset is also served: imported
//! into SQLite, trained by `trainer-svc serve` at startup, followed by an
//! `inference-svc`, and asked a Predict whose history and candidates have the
//! same shape.
//!
//! The shared data is read from `$TASKCAST_DATA_DIR` (default
//! `/work/shared/data`); without it the test fails rather than skip those shapes.
//!
//! The binaries come from the same target directory as this test
//! (`cargo build --workspace --bins` first; `scripts/test.sh` does).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use taskcast_contract::Artifact;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{Attempt, Candidate, GetModelRequest, ListModelsRequest, PredictRequest};

mod support;
use support::{InferenceProc, TrainerProc, args, binary, connect, reader, run_to_end};

const FAMILIES: [&str; 2] = ["linear", "mlp"];
/// Limit for one `import` or `train` run (debug build, busy machine).
const RUN_LIMIT: Duration = Duration::from_secs(240);
/// Learners taken from the start of the shared file.
const REAL_LEARNERS: usize = 60;

/// One CSV row, as text (what the file says).
#[derive(Clone, Debug)]
struct Row {
    user: String,
    item: String,
    topic: String,
    correct: bool,
    seconds: String,
    ts: String,
    difficulty: String,
}

/// A CSV file's rows; `difficulty_column` says whether it has that column.
#[derive(Clone, Debug)]
struct Table {
    rows: Vec<Row>,
    difficulty_column: bool,
}

impl Table {
    /// Reads a CSV file (gzip when named `.gz`), at most `max_learners`
    /// learners (rows are grouped by learner).
    fn read(path: &Path, max_learners: usize) -> Result<Table> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let input: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut reader = csv::Reader::from_reader(input);
        let header = reader.headers()?.clone();
        let col = |name: &str| header.iter().position(|h| h == name);
        let need = |name: &str| col(name).with_context(|| format!("no {name} column"));
        let (u, i, t, c, s, ts) = (
            need("user_id")?,
            need("item_id")?,
            need("topic")?,
            need("correct")?,
            need("seconds")?,
            need("ts")?,
        );
        let d = col("difficulty");
        let mut rows: Vec<Row> = Vec::new();
        let mut learners = 0;
        for record in reader.records() {
            let r = record?;
            if rows.last().is_none_or(|last| last.user != r[u]) {
                if learners == max_learners {
                    break;
                }
                learners += 1;
            }
            rows.push(Row {
                user: r[u].to_string(),
                item: r[i].to_string(),
                topic: r[t].to_string(),
                correct: &r[c] == "1",
                seconds: r[s].to_string(),
                ts: r[ts].to_string(),
                difficulty: d.map(|d| r[d].to_string()).unwrap_or_default(),
            });
        }
        Ok(Table {
            rows,
            difficulty_column: d.is_some(),
        })
    }

    fn write(&self, path: &Path) -> Result<()> {
        let mut w = csv::Writer::from_path(path)?;
        let mut header = vec!["user_id", "item_id", "topic", "correct", "seconds", "ts"];
        if self.difficulty_column {
            header.push("difficulty");
        }
        w.write_record(&header)?;
        for r in &self.rows {
            let mut rec = vec![
                r.user.as_str(),
                r.item.as_str(),
                r.topic.as_str(),
                if r.correct { "1" } else { "0" },
                r.seconds.as_str(),
                r.ts.as_str(),
            ];
            if self.difficulty_column {
                rec.push(r.difficulty.as_str());
            }
            w.write_record(&rec)?;
        }
        w.flush()?;
        Ok(())
    }

    /// The same rows with `f` applied to each (with its index).
    fn map(&self, mut f: impl FnMut(usize, &mut Row)) -> Table {
        let mut t = self.clone();
        for (i, r) in t.rows.iter_mut().enumerate() {
            f(i, r);
        }
        t
    }

    /// Rows grouped by learner, in file order.
    fn learners(&self) -> Vec<&[Row]> {
        self.rows.chunk_by(|a, b| a.user == b.user).collect()
    }

    fn timed_share(&self) -> f64 {
        let timed = self.rows.iter().filter(|r| !r.seconds.is_empty()).count();
        timed as f64 / self.rows.len().max(1) as f64
    }
}

/// A deterministic number in [0, 1) for (salt, i): splitmix64.
fn unit(salt: u64, i: usize) -> f64 {
    let mut z = salt ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A stable number for a label.
fn label_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `trainer-svc simulate` into `dir/{name}.csv`, read back with its RFC 3339
/// `ts` rewritten as fractional Unix seconds.
fn simulate(dir: &Path, name: &str, learners: usize, attempts: usize, seed: u64) -> Result<Table> {
    let out = dir.join(format!("{name}.csv"));
    let run = run_to_end(
        &format!("simulate-{name}"),
        &binary("trainer-svc")?,
        &args(&[
            "simulate",
            "--learners",
            &learners.to_string(),
            "--attempts",
            &attempts.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
            &out.display().to_string(),
        ]),
        dir,
        RUN_LIMIT,
    )?;
    ensure!(run.status.success(), "simulate failed: {}", run.stderr);
    let mut t = Table::read(&out, usize::MAX)?;
    for r in &mut t.rows {
        let ms = chrono::DateTime::parse_from_rfc3339(&r.ts)
            .with_context(|| format!("simulator ts {:?}", r.ts))?
            .timestamp_millis();
        r.ts = format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
    }
    Ok(t)
}

/// The first `REAL_LEARNERS` learners of the shared `assist2009_rt` file.
fn real_slice() -> Result<Table> {
    let dir = std::env::var("TASKCAST_DATA_DIR").unwrap_or_else(|_| "/work/shared/data".into());
    let path = Path::new(&dir).join("assist2009_rt.csv.gz");
    ensure!(
        path.exists(),
        "{} is missing: the real-data shapes need the shared datasets \
         (set TASKCAST_DATA_DIR to their folder)",
        path.display()
    );
    Table::read(&path, REAL_LEARNERS)
}

/// What a shape must get from `trainer-svc train`.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Trained, exported, verified, and promoted by the gate.
    Promote,
    /// Trained, exported and verified; the gate decides on the hold-out
    /// metrics, either way with its reason.
    Judged,
    /// Trained, exported and verified; rejected with this in the reason.
    Reject(&'static str),
    /// Refused: non-zero exit, no model file, this message on stderr.
    Refuse(&'static str),
}

struct Shape {
    name: &'static str,
    table: Table,
    expect: Expect,
    /// Whether the data has enough times for a time head.
    time_modeled: bool,
    /// Families to run through `serve` + `inference-svc` + Predict.
    serve: &'static [&'static str],
    /// A shape with the same rows in the same order within each learner:
    /// the models must have identical hold-out metrics.
    same_as: Option<&'static str>,
}

fn shape(name: &'static str, table: Table, expect: Expect, time_modeled: bool) -> Shape {
    Shape {
        name,
        table,
        expect,
        time_modeled,
        serve: &[],
        same_as: None,
    }
}

fn shapes(dir: &Path) -> Result<Vec<Shape>> {
    use Expect::*;
    // About 2 100 rows, 460 hold-out: small enough for the mlp family in a
    // debug build, large enough for both families to beat the baselines and
    // for a time head (200 timed hold-out rows) even with 30 % of times missing.
    let sim = simulate(dir, "sim", 80, 30, 5)?;
    ensure!(
        sim.difficulty_column,
        "the simulator writes app difficulty labels"
    );
    let real = real_slice()?;
    let mut out = Vec::new();

    out.push(shape(
        "sim: items, times, difficulty labels present",
        sim.clone(),
        Promote,
        true,
    ));
    out.push(Shape {
        serve: &["linear", "mlp"],
        ..shape(
            "sim: items absent",
            sim.map(|_, r| r.item.clear()),
            Promote,
            true,
        )
    });
    out.push(shape(
        "sim: items on half the rows",
        sim.map(|i, r| {
            if unit(1, i) < 0.5 {
                r.item.clear()
            }
        }),
        Promote,
        true,
    ));
    out.push(Shape {
        serve: &["linear", "mlp"],
        ..shape(
            "sim: times absent",
            sim.map(|_, r| r.seconds.clear()),
            Promote,
            false,
        )
    });
    let times_70 = sim.map(|i, r| {
        if unit(2, i) < 0.3 {
            r.seconds.clear()
        }
    });
    ensure!((0.65..0.75).contains(&times_70.timed_share()));
    out.push(Shape {
        serve: &["linear"],
        ..shape(
            "sim: times missing on 30 % of rows",
            times_70,
            Promote,
            true,
        )
    });
    out.push(shape(
        "sim: difficulty labels absent",
        Table {
            difficulty_column: false,
            ..sim.clone()
        },
        Promote,
        true,
    ));
    // Half the items exercise a second skill as well: "geometry;algebra".
    let topics: Vec<String> = {
        let mut t: Vec<String> = sim.rows.iter().map(|r| r.topic.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    out.push(Shape {
        serve: &["mlp"],
        ..shape(
            "sim: multi-skill topics (a;b)",
            sim.map(|_, r| {
                let h = label_hash(&r.item);
                if h.is_multiple_of(2) {
                    let other = &topics[(h / 2) as usize % topics.len()];
                    if *other != r.topic {
                        r.topic = format!("{};{other}", r.topic);
                    }
                }
            }),
            Promote,
            true,
        )
    });
    out.push(Shape {
        serve: &["linear", "mlp"],
        ..shape(
            "sim: unicode and very long labels",
            unicode_labels(&sim, &topics),
            Promote,
            true,
        )
    });
    // One learner with a long history (hold-out 20 % of it). Priors are
    // out-of-fold by learner, so with one learner every training row sees
    // empty priors and the model learns from the learner's own history only;
    // whether that beats the baselines on 66 hold-out rows is the gate's
    // call, and it must say why either way.
    let one = simulate(dir, "one", 12, 120, 8)?;
    let longest = one
        .learners()
        .into_iter()
        .max_by_key(|l| l.len())
        .context("a learner")?
        .to_vec();
    ensure!(
        longest.len() >= 150,
        "one learner has {} rows",
        longest.len()
    );
    out.push(shape(
        "sim: one learner",
        Table {
            rows: longest,
            ..one
        },
        Judged,
        false,
    ));
    out.push(shape(
        "sim: one topic",
        sim.map(|_, r| r.topic = "fractions".into()),
        Promote,
        true,
    ));
    // Every learner stops after 1 to 4 attempts: no hold-out at all.
    let many = simulate(dir, "short", 400, 20, 9)?;
    let short: Vec<Row> = many
        .learners()
        .into_iter()
        .enumerate()
        .flat_map(|(k, l)| l.iter().take(1 + k % 4).cloned())
        .collect();
    out.push(shape(
        "sim: only learners with < 5 attempts",
        Table {
            rows: short,
            ..many
        },
        Reject("need more learners with at least 5 attempts"),
        false,
    ));
    // Every attempt of a learner at the same second (the file's order is
    // the only order left): the same model as the base data.
    let mut first_ts: HashMap<String, String> = HashMap::new();
    // Not the same model as with real times since feature schema v2: the
    // time between attempts is a feature, and here it is zero throughout.
    // The file's order still decides (ties are kept in file order), and the
    // model must still train and be promoted.
    out.push(Shape {
        same_as: None,
        ..shape(
            "sim: equal timestamps within a learner",
            sim.map(|_, r| {
                let ts = first_ts
                    .entry(r.user.clone())
                    .or_insert_with(|| r.ts.split('.').next().unwrap_or_default().to_string());
                r.ts = ts.clone();
            }),
            Promote,
            true,
        )
    });
    out.push(Shape {
        same_as: Some("sim: items, times, difficulty labels present"),
        ..shape(
            "sim: rows out of order in the file",
            shuffled(&sim, 3),
            Promote,
            true,
        )
    });
    let perfect = sim
        .learners()
        .into_iter()
        .find(|l| l.len() >= 20)
        .context("a learner with 20 attempts")?[0]
        .user
        .clone();
    out.push(shape(
        "sim: a learner whose every answer is correct",
        sim.map(|_, r| {
            if r.user == perfect {
                r.correct = true
            }
        }),
        Promote,
        true,
    ));
    out.push(shape(
        "sim: every answer correct",
        sim.map(|_, r| r.correct = true),
        Refuse("every training row is correct"),
        true,
    ));

    out.push(Shape {
        serve: &["linear"],
        ..shape(
            "real: multi-skill topics, items, times",
            real.clone(),
            Promote,
            true,
        )
    });
    out.push(shape(
        "real: items absent",
        real.map(|_, r| r.item.clear()),
        Promote,
        true,
    ));
    out.push(shape(
        "real: times missing on 30 % of rows",
        real.map(|i, r| {
            if unit(4, i) < 0.3 {
                r.seconds.clear()
            }
        }),
        Promote,
        true,
    ));
    out.push(Shape {
        same_as: Some("real: multi-skill topics, items, times"),
        ..shape(
            "real: rows out of order in the file",
            shuffled(&real, 5),
            Promote,
            true,
        )
    });
    ensure!(
        real.rows.iter().filter(|r| r.topic.contains(';')).count() > 100,
        "the real slice should carry multi-skill topics"
    );
    Ok(out)
}

/// Topics, learners, items and difficulty labels renamed to non-ASCII text,
/// some of it very long, with the CSV's own separators and quotes inside.
fn unicode_labels(sim: &Table, topics: &[String]) -> Table {
    const NAMES: [&str; 8] = [
        "分数と小数",
        "Brüche, \"gemischt\" – ½ + ¾",
        "геометрия: углы и треугольники",
        "الجبر والمعادلات",
        "统计 📊 & probabilité",
        "Ελληνικά — λόγοι",
        "한국어 주제 🚀",
        "",
    ];
    let long_topic = format!(
        "Sehr langer Themenname — {} — fin",
        "ñandú 🦜 çà et là, ".repeat(40)
    );
    let topic_name = |t: &str| -> String {
        let k = topics.iter().position(|x| x == t).unwrap_or(0) % NAMES.len();
        if NAMES[k].is_empty() {
            long_topic.clone()
        } else {
            NAMES[k].to_string()
        }
    };
    sim.map(|_, r| {
        r.topic = topic_name(&r.topic);
        r.user = if label_hash(&r.user).is_multiple_of(5) {
            format!("学習者-{}-{}", r.user, "é".repeat(300))
        } else {
            format!("学習者-{}", r.user)
        };
        r.item = if label_hash(&r.item).is_multiple_of(3) {
            format!("задача-{}-{}", r.item, "∑∫".repeat(150))
        } else {
            format!("задача-{}", r.item)
        };
        r.difficulty = match r.difficulty.as_str() {
            "easy" => "leicht ☆".into(),
            "medium" => "mittel ☆☆".into(),
            "hard" => "schwer ☆☆☆".into(),
            other => other.into(),
        };
    })
}

/// The rows in a seeded random order (Fisher–Yates).
fn shuffled(t: &Table, seed: u64) -> Table {
    let mut t = t.clone();
    for i in (1..t.rows.len()).rev() {
        let j = (unit(seed, i) * (i + 1) as f64) as usize;
        t.rows.swap(i, j);
    }
    t
}

/// What `train` did with one shape and family.
#[derive(Clone, Debug)]
enum Outcome {
    Promoted(String),
    Rejected(String),
    Refused(String),
}

impl Outcome {
    fn show(&self) -> String {
        match self {
            Outcome::Promoted(r) => format!("promoted: {r}"),
            Outcome::Rejected(r) => format!("rejected: {r}"),
            Outcome::Refused(m) => format!("refused: {m}"),
        }
    }
}

/// One `train` run's result and the artifact's metrics.
struct TrainResult {
    outcome: Outcome,
    metrics: BTreeMap<String, f64>,
    time_line: String,
}

/// The gate's verdict from its reason (the reasons are fixed phrases).
fn verdict(reason: &str) -> Result<Outcome> {
    let promotes = ["first model:", "not worse than the active version"];
    let rejects = ["only ", "degenerate:", "does not beat", "worse than"];
    if promotes.iter().any(|p| reason.starts_with(p)) {
        Ok(Outcome::Promoted(reason.into()))
    } else if rejects.iter().any(|p| reason.starts_with(p)) {
        Ok(Outcome::Rejected(reason.into()))
    } else {
        bail!("the gate line says neither promote nor reject: {reason:?}")
    }
}

/// `trainer-svc train` on one shape, checked against its expectation.
fn train(dir: &Path, key: &str, data: &Path, family: &str, s: &Shape) -> Result<TrainResult> {
    let out = dir.join(format!("{key}-{family}.onnx"));
    let run = run_to_end(
        &format!("train-{key}-{family}"),
        &binary("trainer-svc")?,
        &args(&[
            "train",
            "--data",
            &data.display().to_string(),
            "--family",
            family,
            "--out",
            &out.display().to_string(),
        ]),
        dir,
        RUN_LIMIT,
    )?;
    let all = format!("{}\n{}", run.stdout, run.stderr);
    ensure!(!all.contains("panicked"), "train panicked:\n{all}");
    ensure!(
        !all.contains("NaN"),
        "train printed a non-finite number:\n{all}"
    );
    if let Expect::Refuse(msg) = s.expect {
        ensure!(
            !run.status.success(),
            "expected a refusal naming {msg:?}, but train succeeded:\n{}",
            run.stdout
        );
        ensure!(!out.exists(), "a refused run wrote {}", out.display());
        let error = run
            .stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .with_context(|| format!("no `error:` line on stderr:\n{}", run.stderr))?;
        ensure!(
            error.contains(msg),
            "the refusal should say {msg:?}; it says {error:?}"
        );
        ensure!(
            error.matches(msg).count() == 1,
            "the refusal repeats itself: {error:?}"
        );
        return Ok(TrainResult {
            outcome: Outcome::Refused(error.trim_start_matches("error: ").into()),
            metrics: BTreeMap::new(),
            time_line: String::new(),
        });
    }
    ensure!(
        run.status.success(),
        "train failed ({}):\n{}",
        run.status,
        run.stderr
    );
    let bytes = std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?;
    let artifact = Artifact::parse(&bytes).context("the model file is not a valid artifact")?;
    let m = &artifact.metadata;
    ensure!(m.family == family, "artifact family {}", m.family);
    ensure!(
        m.time_modeled == Some(s.time_modeled),
        "artifact time_modeled {:?}, expected {}",
        m.time_modeled,
        s.time_modeled
    );
    if let Some((k, v)) = m.metrics.iter().find(|(_, v)| !v.is_finite()) {
        bail!("artifact metric {k} = {v}");
    }
    let time_line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("version "))
        .context("no `version … time …` line")?;
    let says_modelled = time_line.contains("time modelled");
    ensure!(
        says_modelled == s.time_modeled
            && (says_modelled || time_line.contains("time not modelled: ")),
        "expected time_modeled = {}: {time_line:?}",
        s.time_modeled
    );
    let reason = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("gate: "))
        .context("no `gate:` line")?;
    ensure!(reason.len() > 10, "the gate gives no reason: {reason:?}");
    let outcome = verdict(reason)?;
    match (s.expect, &outcome) {
        (Expect::Promote, Outcome::Promoted(_)) | (Expect::Judged, _) => {}
        (Expect::Reject(msg), Outcome::Rejected(r)) if r.contains(msg) => {}
        (e, o) => bail!("expected {e:?}, got {}", o.show()),
    }
    Ok(TrainResult {
        outcome,
        metrics: m.metrics.clone(),
        time_line: time_line
            .split_once("  ")
            .map_or(time_line, |(_, t)| t)
            .to_string(),
    })
}

/// `trainer-svc import` into a fresh SQLite file `dir/{key}.db`; every row
/// must be imported. Returns the database URL.
fn import(dir: &Path, key: &str, data: &Path, rows: usize) -> Result<String> {
    let db = dir.join(format!("{key}.db"));
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let run = run_to_end(
        &format!("import-{key}"),
        &binary("trainer-svc")?,
        &args(&[
            "import",
            "--database-url",
            &url,
            "--data",
            &data.display().to_string(),
        ]),
        dir,
        RUN_LIMIT,
    )?;
    ensure!(
        run.status.success(),
        "import failed ({}):\n{}{}",
        run.status,
        run.stdout,
        run.stderr
    );
    ensure!(
        run.stdout.contains(&format!("committed {rows} rows")),
        "import should commit all {rows} rows:\n{}",
        run.stdout
    );
    Ok(url)
}

/// Runs `jobs` on a few threads; results in job order.
fn parallel<T: Send>(jobs: usize, run: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..jobs).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs {
                        break;
                    }
                    let r = run(j);
                    if let Ok(mut all) = results.lock() {
                        all[j] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

/// A Predict request in the shape's own style: a long learner's history,
/// their last three tasks as candidates, and a topic never seen. The learner
/// is the longest of those whose last tasks include a multi-skill topic,
/// when any does.
fn predict_request(t: &Table) -> Result<PredictRequest> {
    let multi = |l: &[Row]| {
        l.iter()
            .rev()
            .take(3)
            .filter(|r| r.topic.contains(';'))
            .count()
            .min(1)
    };
    let rows = t
        .learners()
        .into_iter()
        .max_by_key(|l| (multi(l), l.len()))
        .context("a learner")?;
    ensure!(
        rows.len() > 5,
        "the longest learner has {} rows",
        rows.len()
    );
    let (history, next) = rows.split_at(rows.len() - 3);
    let attempt = |r: &Row| -> Result<Attempt> {
        let ts: f64 = r.ts.parse().with_context(|| format!("ts {:?}", r.ts))?;
        Ok(Attempt {
            topic: r.topic.clone(),
            difficulty: r.difficulty.clone(),
            correct: r.correct,
            seconds: if r.seconds.is_empty() {
                0.0
            } else {
                r.seconds.parse()?
            },
            completed_at: Some(prost_types::Timestamp {
                seconds: ts.floor() as i64,
                nanos: ((ts - ts.floor()) * 1e9) as i32,
            }),
            item_id: r.item.clone(),
        })
    };
    let candidate = |k: usize, r: &Row, topic: String| Candidate {
        task_id: format!("t{k}"),
        topic,
        difficulty: r.difficulty.clone(),
        item_id: r.item.clone(),
    };
    let mut candidates: Vec<Candidate> = next
        .iter()
        .enumerate()
        .map(|(k, r)| candidate(k, r, r.topic.clone()))
        .collect();
    let last = &next[next.len() - 1];
    candidates.push(Candidate {
        item_id: if last.item.is_empty() {
            String::new()
        } else {
            format!("{}-neu-ü", last.item)
        },
        ..candidate(9, last, format!("{} — nie gesehen ✨", last.topic))
    });
    Ok(PredictRequest {
        user_id: rows[0].user.clone(),
        history: history
            .iter()
            .rev()
            .take(50)
            .rev()
            .map(attempt)
            .collect::<Result<_>>()?,
        candidates,
        explain: true,
        as_of: None,
    })
}

/// `serve` on the imported database trains at startup and promotes; an
/// inference replica follows it and answers a Predict in the shape's style.
async fn serve(dir: &Path, db_url: &str, family: &str, s: &Shape) -> Result<String> {
    let trainer = TrainerProc::start(
        db_url,
        dir,
        &format!("trainer-{family}"),
        &["--retrain-every", "0", "--family", family],
    )?;
    let replica = InferenceProc::start(
        dir,
        &format!("inference-{family}"),
        Some(&trainer.url()),
        &[],
    )?;
    let mut tc = TrainerClient::new(connect(trainer.port).await?);
    let deadline = Instant::now() + Duration::from_secs(180);
    let model = loop {
        let models = tc
            .list_models(reader(ListModelsRequest { limit: 10 }))
            .await?
            .into_inner()
            .models;
        // A run registers its version as a candidate a moment before it
        // promotes or rejects it: wait for the decision.
        if let Some(m) = models.first().filter(|m| m.state != "candidate") {
            ensure!(models.len() == 1, "more than one version: {models:?}");
            ensure!(
                m.state == "active",
                "the startup run was not promoted ({}): {}",
                m.state,
                m.reason
            );
            break m.clone();
        }
        ensure!(Instant::now() < deadline, "no startup run finished in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(model.family == family, "trained family {}", model.family);
    ensure!(
        model.time_modeled == s.time_modeled,
        "registry time_modeled {} (expected {}): {}",
        model.time_modeled,
        s.time_modeled,
        model.reason
    );
    let mut ic = InferenceClient::new(connect(replica.port).await?);
    let info = loop {
        if let Ok(info) = ic.get_model(GetModelRequest {}).await {
            let info = info.into_inner();
            if info.version == model.version {
                break info;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "inference did not swap to {}",
            model.version
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        info.time_modeled == s.time_modeled,
        "GetModel time_modeled {}",
        info.time_modeled
    );
    let request = predict_request(&s.table)?;
    // The request has the shape's own kind of labels.
    if s.table.rows.iter().any(|r| r.topic.contains(';')) {
        ensure!(
            request.history.iter().any(|a| a.topic.contains(';'))
                && request.candidates.iter().any(|c| c.topic.contains(';')),
            "the request should carry multi-skill topics"
        );
    }
    if s.table.rows.iter().all(|r| r.item.is_empty()) {
        ensure!(
            request.candidates.iter().all(|c| c.item_id.is_empty()),
            "the request should carry no item ids"
        );
    }
    let n = request.candidates.len();
    let resp = ic.predict(request.clone()).await?.into_inner();
    ensure!(
        resp.model_version == model.version,
        "answered by {}, trained {}",
        resp.model_version,
        model.version
    );
    ensure!(resp.time_modeled == s.time_modeled, "Predict time_modeled");
    ensure!(
        resp.predictions.len() == n,
        "{} predictions",
        resp.predictions.len()
    );
    for p in &resp.predictions {
        ensure!(
            p.p_correct.is_finite() && p.p_correct > 0.0 && p.p_correct < 1.0,
            "{}: p_correct {}",
            p.task_id,
            p.p_correct
        );
        ensure!(
            [p.seconds, p.seconds_low, p.seconds_high]
                .iter()
                .all(|v| v.is_finite() && *v > 0.0)
                && p.seconds_low <= p.seconds
                && p.seconds <= p.seconds_high,
            "{}: seconds {} in [{}, {}]",
            p.task_id,
            p.seconds,
            p.seconds_low,
            p.seconds_high
        );
    }
    // What the data never had, the model cannot have learned: times or item
    // ids appearing in requests must not move p_correct.
    let mut unseen = Vec::new();
    if s.table.rows.iter().all(|r| r.seconds.is_empty()) {
        let mut timed = request.clone();
        for (k, a) in timed.history.iter_mut().enumerate() {
            a.seconds = 12.0 + (k % 7) as f64 * 9.5;
        }
        unseen.push(("times", timed));
    }
    if s.table.rows.iter().all(|r| r.item.is_empty()) {
        let mut with_items = request.clone();
        for (k, a) in with_items.history.iter_mut().enumerate() {
            a.item_id = format!("item-{}", k % 4);
        }
        for (k, c) in with_items.candidates.iter_mut().enumerate() {
            c.item_id = format!("item-{}", k % 4);
        }
        unseen.push(("item ids", with_items));
    }
    for (what, req) in unseen {
        let other = ic.predict(req).await?.into_inner();
        for (a, b) in resp.predictions.iter().zip(&other.predictions) {
            ensure!(
                (a.p_correct - b.p_correct).abs() < 1e-6,
                "{what} in the request moved {}'s p_correct {} -> {}, \
                 though the training data had none",
                a.task_id,
                a.p_correct,
                b.p_correct
            );
        }
    }
    let p = &resp.predictions[0];
    Ok(format!(
        "served {}: p_correct {:.3}, seconds {:.1} [{:.1}, {:.1}], time_modeled {}",
        model.version, p.p_correct, p.seconds, p.seconds_low, p.seconds_high, resp.time_modeled
    ))
}

/// A file-name-safe key for shape `i`.
fn key(i: usize) -> String {
    format!("s{i:02}")
}

#[test]
fn data_shape_matrix() -> Result<()> {
    let started = Instant::now();
    let dir = support::test_dir("data-shapes")?;
    let shapes = shapes(&dir)?;
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let f = dir.join(format!("{}.csv", key(i)));
        s.table.write(&f)?;
        files.push(f);
    }
    let built = started.elapsed();

    // Import every shape into its own database.
    let imports = parallel(shapes.len(), |i| {
        import(&dir, &key(i), &files[i], shapes[i].table.rows.len())
    });
    let imported = started.elapsed();

    // Train every family on every shape.
    let jobs: Vec<(usize, &str)> = (0..shapes.len())
        .flat_map(|i| FAMILIES.map(|f| (i, f)))
        .collect();
    let trained = parallel(jobs.len(), |j| {
        let (i, family) = jobs[j];
        train(&dir, &key(i), &files[i], family, &shapes[i])
    });
    let train_done = started.elapsed();

    let mut failures: Vec<String> = Vec::new();
    let mut results: HashMap<(usize, &str), &TrainResult> = HashMap::new();
    for (j, r) in trained.iter().enumerate() {
        let (i, family) = jobs[j];
        match r {
            Ok(t) => {
                results.insert((i, family), t);
            }
            Err(e) => failures.push(format!("{} × {family}: {e:#}", shapes[i].name)),
        }
    }
    for (i, r) in imports.iter().enumerate() {
        if let Err(e) = r {
            failures.push(format!("{}: import: {e:#}", shapes[i].name));
        }
    }
    // Same rows, other order or timestamps: the same model.
    for (i, s) in shapes.iter().enumerate() {
        let Some(base) = s.same_as else { continue };
        let b = shapes
            .iter()
            .position(|x| x.name == base)
            .context("same_as names a shape")?;
        for family in FAMILIES {
            if let (Some(x), Some(y)) = (results.get(&(i, family)), results.get(&(b, family))) {
                let differ: Vec<String> = x
                    .metrics
                    .iter()
                    .filter(|(k, v)| y.metrics.get(*k).is_none_or(|w| (*v - w).abs() > 1e-9))
                    .map(|(k, v)| format!("{k} {v} vs {:?}", y.metrics.get(k)))
                    .collect();
                if !differ.is_empty() {
                    failures.push(format!(
                        "{} × {family}: should train the same model as {base:?}: {}",
                        s.name,
                        differ.join(", ")
                    ));
                }
            }
        }
    }

    // The serve subset, all at once, each on its own database and ports.
    let serve_jobs: Vec<(usize, &str)> = shapes
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.serve.iter().map(move |f| (i, *f)))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let served: Vec<Result<String>> = runtime.block_on(futures::future::join_all(
        serve_jobs.iter().map(|&(i, family)| {
            let (dir, shapes, files) = (&dir, &shapes, &files);
            async move {
                let case_dir = dir.join(format!("serve-{}-{family}", key(i)));
                std::fs::create_dir_all(&case_dir)?;
                // Each case imports into its own database, so two families
                // on one shape do not share a registry.
                let file = &files[i];
                let rows = shapes[i].table.rows.len();
                let r = match import(&case_dir, "x", file, rows) {
                    Ok(url) => serve(&case_dir, &url, family, &shapes[i]).await,
                    Err(e) => Err(e),
                };
                if r.is_err() {
                    support::dump_logs(&case_dir);
                }
                r
            }
        }),
    ));
    let served_at = started.elapsed();
    let mut serve_lines: HashMap<(usize, &str), String> = HashMap::new();
    for (&(i, family), r) in serve_jobs.iter().zip(&served) {
        match r {
            Ok(line) => {
                serve_lines.insert((i, family), line.clone());
            }
            Err(e) => failures.push(format!("{} × {family}: serve: {e:#}", shapes[i].name)),
        }
    }

    // The table: shape × family → outcome.
    let mut table = String::new();
    let _ = writeln!(table, "\n{:<52} {:<7} outcome", "shape (rows)", "family");
    for (i, s) in shapes.iter().enumerate() {
        for family in FAMILIES {
            let label = format!("{} ({})", s.name, s.table.rows.len());
            let cell = match trained.iter().zip(&jobs).find(|(_, j)| **j == (i, family)) {
                Some((Ok(t), _)) => {
                    let time = if t.time_line.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", t.time_line.split(':').next().unwrap_or_default())
                    };
                    format!("{}{time}", t.outcome.show())
                }
                Some((Err(e), _)) => format!("FAILED: {e:#}"),
                None => "not run".into(),
            };
            let _ = writeln!(table, "{label:<52} {family:<7} {cell}");
            if let Some(line) = serve_lines.get(&(i, family)) {
                let _ = writeln!(table, "{:<52} {:<7} {line}", "", "");
            }
        }
    }
    let _ = writeln!(
        table,
        "\nfiles built in {:.1}s, imported by {:.1}s, trained by {:.1}s, served by {:.1}s",
        built.as_secs_f64(),
        imported.as_secs_f64(),
        train_done.as_secs_f64(),
        served_at.as_secs_f64()
    );
    eprintln!("{table}");
    ensure!(
        failures.is_empty(),
        "{} of the matrix failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
