//! CSV reading and import tests. Import tests run against a fresh SQLite file
//! and a fresh PostgreSQL database (PostgreSQL must be running).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flate2::Compression;
use flate2::write::GzEncoder;
use taskcast_contract::TaskRow;
use taskcast_testdb::TestDb;
use trainer_svc::data::csv::{CsvError, CsvSource, TsUnit};
use trainer_svc::data::import::{ImportError, ImportOptions, import_csv};
use trainer_svc::db::Db;

const STRICT: ImportOptions = ImportOptions {
    ts_unit: TsUnit::S,
    skip_bad_rows: false,
    allow_reimport: false,
};
const SKIP: ImportOptions = ImportOptions {
    ts_unit: TsUnit::S,
    skip_bad_rows: true,
    allow_reimport: false,
};

async fn on_each_backend(f: impl AsyncFn(&str)) {
    let dbs = TestDb::all()
        .await
        .expect("test databases (is PostgreSQL running?)");
    for t in dbs {
        eprintln!("--- backend: {}", t.backend_name());
        f(t.url()).await;
        t.cleanup().await.expect("drop test database");
    }
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn write_gz(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    let mut enc = GzEncoder::new(std::fs::File::create(&p).unwrap(), Compression::fast());
    enc.write_all(content.as_bytes()).unwrap();
    enc.finish().unwrap();
    p
}

const GOOD: &str = "\
user_id,item_id,topic,correct,seconds,ts,difficulty
u1,i1,fractions,1,12.5,0,easy
u1,,fractions,0,,1,
u1,i2,\"Order of Operations +,-,/,* ()\",true,3,2,hard
u2,i1,fractions,FALSE,4.25,2024-01-02T03:04:05Z,
u2,i3,decimals,1,0,1700000000,
";

fn csv_with_bad_line_7() -> String {
    let mut s = String::from("user_id,item_id,topic,correct,seconds,ts\n");
    for i in 0..5 {
        s.push_str(&format!("u1,i{i},t,1,2.5,{i}\n"));
    }
    s.push_str("u1,i9,t,maybe,2.5,9\n"); // line 7
    for i in 10..20 {
        s.push_str(&format!("u2,i{i},t,0,,{i}\n"));
    }
    s
}

#[test]
fn reads_all_fields() {
    let dir = tempfile::tempdir().unwrap();
    let src = CsvSource::open(&write(dir.path(), "a.csv", GOOD)).unwrap();
    assert!(src.has_difficulty());
    let rows: Vec<_> = src.collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len(), 5);
    let lines: Vec<u64> = rows.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6]);
    let r = &rows[0].1;
    assert_eq!(
        (r.user_id.as_str(), r.item_id.as_deref(), r.topic.as_str()),
        ("u1", Some("i1"), "fractions")
    );
    assert_eq!(
        (r.correct, r.seconds, r.difficulty.as_str()),
        (true, Some(12.5), "easy")
    );
    assert_eq!((rows[1].1.item_id.clone(), rows[1].1.seconds), (None, None));
    assert_eq!(rows[2].1.topic, "Order of Operations +,-,/,* ()");
    assert!(rows[2].1.correct && !rows[3].1.correct);
    assert_eq!(rows[3].1.completed_at_ms, 1_704_164_645_000);
    assert_eq!(rows[4].1.completed_at_ms, 1_700_000_000_000);
    assert_eq!(rows[4].1.seconds, Some(0.0));
}

#[test]
fn strict_mode_names_line_column_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.csv", &csv_with_bad_line_7());
    let err = CsvSource::open(&p)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
    assert_eq!(err.line(), Some(7));
    let msg = err.to_string();
    assert!(
        msg.contains("line 7") && msg.contains("correct") && msg.contains("maybe"),
        "{msg}"
    );

    let p = write(
        dir.path(),
        "cols.csv",
        "user_id,item_id,topic,correct,seconds,ts\nu,i,t,1,,1\nu,i,t,1,1\n",
    );
    let err = CsvSource::open(&p)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
    assert!(
        matches!(
            err,
            CsvError::ColumnCount {
                line: 3,
                expected: 6,
                found: 5
            }
        ),
        "{err}"
    );

    for (bad, column) in [
        ("u,i,t,1,fast,1", "seconds"),
        ("u,i,t,1,1,soon", "ts"),
        ("u,i,t,1,NaN,1", "seconds"),
    ] {
        let p = write(
            dir.path(),
            "v.csv",
            &format!("user_id,item_id,topic,correct,seconds,ts\n{bad}\n"),
        );
        match CsvSource::open(&p).unwrap().next() {
            Some(Err(CsvError::BadValue {
                line: 2, column: c, ..
            })) => assert_eq!(c, column),
            other => panic!("{bad}: {other:?}"),
        }
    }

    let p = write(dir.path(), "hdr.csv", "user_id,item_id,topic,correct,ts\n");
    assert!(matches!(
        CsvSource::open(&p),
        Err(CsvError::MissingColumn {
            column: "seconds",
            ..
        })
    ));
    let p = write(dir.path(), "empty.csv", "");
    assert!(matches!(CsvSource::open(&p), Err(CsvError::NoHeader)));
    assert!(matches!(
        CsvSource::open(&dir.path().join("missing.csv")),
        Err(CsvError::Open { .. })
    ));
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    // Gzip named .csv, plain named .gz: both read by their bytes.
    let gz = write_gz(dir.path(), "data.csv", GOOD);
    let plain = write(dir.path(), "data.csv.gz", GOOD);
    for p in [gz, plain] {
        let rows: Vec<_> = CsvSource::open(&p)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 5, "{}", p.display());
    }
    // Concatenated gzip members (as `cat a.gz b.gz` makes) are read through.
    let a = write_gz(dir.path(), "a.gz", GOOD);
    let b = write_gz(dir.path(), "b.gz", "u9,i9,t,1,,99,\n");
    let mut both = std::fs::read(&a).unwrap();
    both.extend(std::fs::read(&b).unwrap());
    let ab = dir.path().join("ab.gz");
    std::fs::write(&ab, both).unwrap();
    let rows: Vec<_> = CsvSource::open(&ab)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 6);
}

#[test]
fn lenient_mode_skips_and_counts_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let content = "user_id,item_id,topic,correct,seconds,ts\n\
        u,i,t,1,,1\n\
        u,i,t,x,,2\n\
        u,i,t,1,,3\n\
        u,i,t,1\n\
        u,i,t,0,-,5\n\
        u,i,t,0,,6\n";
    let p = write_gz(dir.path(), "l.csv.gz", content);
    let mut src = CsvSource::open(&p).unwrap().lenient();
    let rows: Vec<_> = src.by_ref().collect::<Result<_, _>>().unwrap();
    let lines: Vec<u64> = rows.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [2, 4, 7]);
    let summary = src.into_summary();
    assert_eq!((summary.read, summary.accepted), (6, 3));
    assert_eq!(summary.rejected_total(), 3);
    let by_reason: Vec<(String, u64, Vec<u64>)> = summary
        .rejected
        .iter()
        .map(|r| (r.reason(), r.count, r.first_lines.clone()))
        .collect();
    assert_eq!(
        by_reason,
        [
            ("correct: not 0, 1, true or false".to_string(), 1, vec![3]),
            ("wrong number of columns".to_string(), 1, vec![5]),
            ("seconds: not a finite number".to_string(), 1, vec![6]),
        ]
    );
}

/// What training would skip without a line number (empty learner or topic,
/// negative time) is rejected by the reader, with the line, like any bad value.
#[test]
fn unusable_rows_are_rejected_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for (line, column) in [
        (",i,t,1,2,5", "user_id"),
        ("u,i,,1,2,5", "topic"),
        ("u,i,  ,1,2,5", "topic"),
        ("u,i,t,1,-2,5", "seconds"),
        ("u,i,t,1,2,", "ts"),
    ] {
        let p = write(
            dir.path(),
            "u.csv",
            &format!("user_id,item_id,topic,correct,seconds,ts\nu,i,t,1,2,4\n{line}\n"),
        );
        let err = CsvSource::open(&p)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        match &err {
            CsvError::BadValue {
                line: 3, column: c, ..
            } => assert_eq!(*c, column, "{line}: {err}"),
            other => panic!("{line}: {other:?}"),
        }
        assert!(err.to_string().starts_with("line 3, column"), "{err}");
    }
}

/// A real export: fractional Unix seconds (what most logging code writes),
/// mixed with the other accepted forms, read to the millisecond.
#[test]
fn fractional_unix_seconds_and_other_forms() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "f.csv",
        "user_id,item_id,topic,correct,seconds,ts\n\
         u,i,t,1,2,1414749956.58917\n\
         u,i,t,1,2,1414749957\n\
         u,i,t,1,2,1.414749958e9\n\
         u,i,t,1,2,2014-10-31T10:05:59.5Z\n\
         u,i,t,1,2,2014-10-31 12:06:00.25+02:00\n\
         u,i,t,1,2,2014-10-31 10:06:01\n\
         u,i,t,1,2, 1414749962.000999 \n",
    );
    let ms: Vec<i64> = CsvSource::open(&p)
        .unwrap()
        .map(|r| r.unwrap().1.completed_at_ms)
        .collect();
    assert_eq!(
        ms,
        [
            1_414_749_956_589,
            1_414_749_957_000,
            1_414_749_958_000,
            1_414_749_959_500,
            1_414_749_960_250,
            1_414_749_961_000,
            1_414_749_962_000,
        ]
    );
    // The same file with --ts-unit ms reads the numbers as milliseconds and
    // leaves the date-times alone.
    let ms: Vec<i64> = CsvSource::open(&p)
        .unwrap()
        .ts_unit(TsUnit::Ms)
        .map(|r| r.unwrap().1.completed_at_ms)
        .collect();
    assert_eq!(ms[..3], [1_414_749_956, 1_414_749_957, 1_414_749_958]);
    assert_eq!(ms[3], 1_414_749_959_500);
}

/// What the simulator writes reads back to the same rows, to the millisecond.
#[test]
fn simulated_csv_round_trips() {
    let rows = taskcast_sim::Simulator::new(taskcast_sim::SimConfig {
        seed: 11,
        learners: 20,
        attempts_per_learner: 15,
        ..Default::default()
    })
    .unwrap()
    .generate();
    let mut out = Vec::new();
    taskcast_sim::write_csv(&rows, &mut out).unwrap();
    let read: Vec<TaskRow> = CsvSource::from_reader(std::io::Cursor::new(out))
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    assert_eq!(read, rows);
}

#[tokio::test]
async fn import_inserts_all_rows() {
    on_each_backend(async |url| {
        let dir = tempfile::tempdir().unwrap();
        let p = write_gz(dir.path(), "good.csv.gz", GOOD);
        let db = Db::connect(url).await.unwrap();
        let mut calls = 0;
        let report = import_csv(&db, &p, &STRICT, |_| calls += 1).await.unwrap();
        assert_eq!(report.rows_imported, 5);
        assert_eq!(
            (report.summary.read, report.summary.accepted),
            (5, 5),
            "{:?}",
            report.summary
        );
        assert!(report.summary.rejected.is_empty());
        assert!(calls >= 1);
        assert_eq!(db.count_tasks().await.unwrap(), 5);
        let page = db.scan_tasks(100, None).next_page().await.unwrap().unwrap();
        let from_csv: Vec<_> = CsvSource::open(&p).unwrap().map(|r| r.unwrap().1).collect();
        let mut expected = from_csv.clone();
        expected
            .sort_by(|a, b| (&a.user_id, a.completed_at_ms).cmp(&(&b.user_id, b.completed_at_ms)));
        let got: Vec<_> = page.into_iter().map(|(_, r)| r).collect();
        assert_eq!(got, expected);
    })
    .await;
}

#[tokio::test]
async fn import_with_malformed_line_imports_nothing() {
    on_each_backend(async |url| {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.csv", &csv_with_bad_line_7());
        let db = Db::connect(url).await.unwrap();
        let err = import_csv(&db, &p, &STRICT, |_| {}).await.unwrap_err();
        assert_eq!(err.line(), Some(7), "{err}");
        assert!(matches!(err, ImportError::BadRow { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("line 7, column `correct`") && msg.contains("\"maybe\""),
            "{msg}"
        );
        assert!(msg.contains("--skip-bad-rows"), "{msg}");
        assert_eq!(db.count_tasks().await.unwrap(), 0);

        // Past the first batch too: 2500 good rows, then a bad line.
        let mut big = String::from("user_id,item_id,topic,correct,seconds,ts\n");
        for i in 0..2500 {
            big.push_str(&format!("u{},i,t,1,,{i}\n", i % 7));
        }
        big.push_str("u1,i,t,1,,\n");
        let p = write_gz(dir.path(), "big.gz", &big);
        let err = import_csv(&db, &p, &STRICT, |_| {}).await.unwrap_err();
        assert_eq!(err.line(), Some(2502), "{err}");
        assert_eq!(db.count_tasks().await.unwrap(), 0);
        // The connection is usable afterwards and a good import works.
        let p = write(dir.path(), "good.csv", GOOD);
        assert_eq!(
            import_csv(&db, &p, &STRICT, |_| {})
                .await
                .unwrap()
                .rows_imported,
            5
        );
    })
    .await;
}

/// A file with a few bad rows of several kinds, 14 good rows and 6 bad ones.
fn csv_with_bad_rows() -> String {
    let mut s = String::from("user_id,item_id,topic,correct,seconds,ts\n");
    let bad = [
        (4, "u1,i,t,1,2.5,yesterday"),
        (7, "u1,i,t,maybe,2.5,1414749960.5"),
        (9, ",i,t,1,2.5,1414749962.5"),
        (12, "u2,i,t,1,2.5,"),
        (15, "u2,i,t,1,2.5,soon"),
        (18, "u2,i,t,1"),
    ];
    let mut good = 0;
    for line in 2..=21 {
        match bad.iter().find(|(l, _)| *l == line) {
            Some((_, text)) => s.push_str(text),
            None => {
                let user = if line < 11 { "u1" } else { "u2" };
                s.push_str(&format!(
                    "{user},i{line},t,1,2.5,{}.25",
                    1_414_749_950 + line
                ));
                good += 1;
            }
        }
        s.push('\n');
    }
    assert_eq!(good, 14);
    s
}

#[tokio::test]
async fn import_skip_bad_rows_imports_the_rest_and_reports_them() {
    on_each_backend(async |url| {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.csv", &csv_with_bad_rows());
        let db = Db::connect(url).await.unwrap();

        let err = import_csv(&db, &p, &STRICT, |_| {}).await.unwrap_err();
        assert_eq!(err.line(), Some(4), "{err}");
        assert_eq!(db.count_tasks().await.unwrap(), 0);

        let report = import_csv(&db, &p, &SKIP, |_| {}).await.unwrap();
        assert_eq!(report.rows_imported, 14);
        assert_eq!(db.count_tasks().await.unwrap(), 14);
        let s = &report.summary;
        assert_eq!((s.read, s.accepted, s.rejected_total()), (20, 14, 6));
        let by_reason: Vec<(String, u64, Vec<u64>)> = s
            .rejected
            .iter()
            .map(|r| (r.reason(), r.count, r.first_lines.clone()))
            .collect();
        let ts_bad = "ts: not Unix seconds, RFC 3339 or YYYY-MM-DD HH:MM:SS[.f]";
        assert_eq!(
            by_reason,
            [
                (ts_bad.to_string(), 2, vec![4, 15]),
                ("correct: not 0, 1, true or false".to_string(), 1, vec![7]),
                ("user_id: empty".to_string(), 1, vec![9]),
                ("ts: empty (ts is required)".to_string(), 1, vec![12]),
                ("wrong number of columns".to_string(), 1, vec![18]),
            ]
        );
        // Fractional seconds reached the database to the millisecond.
        let page = db.scan_tasks(100, None).next_page().await.unwrap().unwrap();
        assert_eq!(page[0].1.completed_at_ms, 1_414_749_952_250);
    })
    .await;
}

#[tokio::test]
async fn import_refuses_a_file_with_no_good_row_even_when_skipping() {
    let dir = tempfile::tempdir().unwrap();
    // Milliseconds without --ts-unit ms: every row is out of range as seconds.
    let p = write(
        dir.path(),
        "ms.csv",
        "user_id,item_id,topic,correct,seconds,ts\n\
         u,i,t,1,2,1414749956589\n\
         u,i,t,0,3,1414749957589\n",
    );
    let t = TestDb::sqlite().unwrap();
    let db = Db::connect(t.url()).await.unwrap();
    let err = import_csv(&db, &p, &SKIP, |_| {}).await.unwrap_err();
    assert!(matches!(err, ImportError::NothingImported { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("every row was rejected") && msg.contains("--ts-unit ms"),
        "{msg}"
    );
    assert!(msg.contains("read 2 rows; imported 0; rejected 2"), "{msg}");
    assert_eq!(db.count_tasks().await.unwrap(), 0);

    // With the unit given, the same file imports.
    let ms = ImportOptions {
        ts_unit: TsUnit::Ms,
        skip_bad_rows: false,
        allow_reimport: false,
    };
    let report = import_csv(&db, &p, &ms, |_| {}).await.unwrap();
    assert_eq!(report.rows_imported, 2);
    let page = db.scan_tasks(100, None).next_page().await.unwrap().unwrap();
    let got: Vec<i64> = page.iter().map(|(_, r)| r.completed_at_ms).collect();
    assert_eq!(got, [1_414_749_956_589, 1_414_749_957_589]);

    // A header and no rows is an empty import, not an error.
    let p = write(
        dir.path(),
        "empty.csv",
        "user_id,item_id,topic,correct,seconds,ts\n",
    );
    let report = import_csv(&db, &p, &SKIP, |_| {}).await.unwrap();
    assert_eq!((report.rows_imported, report.summary.read), (0, 0));
    db.close().await.unwrap();
    t.cleanup().await.unwrap();
}

/// Imports the 941k-row ASSISTments 2017 file into both backends and reads it
/// back page by page, printing timings. Needs the project's data directory:
/// `TASKCAST_DATA_DIR=/work/shared/data cargo test --test import -- --ignored --nocapture`
#[tokio::test]
#[ignore = "slow; needs the shared data directory"]
async fn import_assist2017_timing() {
    let dir = std::env::var("TASKCAST_DATA_DIR").unwrap_or_else(|_| "/work/shared/data".to_owned());
    let file =
        std::env::var("TASKCAST_IMPORT_FILE").unwrap_or_else(|_| "assist2017.csv.gz".to_owned());
    let path = Path::new(&dir).join(file);
    assert!(path.exists(), "{} not found", path.display());
    on_each_backend(async |url| {
        let db = Db::connect(url).await.unwrap();
        let report = import_csv(&db, &path, &STRICT, |_| {}).await.unwrap();
        eprintln!(
            "import: {} rows in {:.1}s ({:.0} rows/s)",
            report.rows_imported,
            report.elapsed.as_secs_f64(),
            report.rows_per_second()
        );
        let t = Instant::now();
        let mut pager = db.scan_tasks(10_000, db.max_task_id().await.unwrap());
        let mut n = 0u64;
        let mut last: Option<(String, i64)> = None;
        while let Some(page) = pager.next_page().await.unwrap() {
            for (_, r) in page {
                if let Some((u, ms)) = &last
                    && *u == r.user_id
                {
                    assert!(*ms <= r.completed_at_ms);
                }
                last = Some((r.user_id, r.completed_at_ms));
                n += 1;
            }
        }
        assert_eq!(n, report.rows_imported);
        eprintln!("scan: {n} rows in {:.1}s", t.elapsed().as_secs_f64());
    })
    .await;
}
