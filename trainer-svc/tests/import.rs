//! CSV reading and import tests. Import tests run against a fresh SQLite file
//! and a fresh PostgreSQL database (PostgreSQL must be running).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flate2::Compression;
use flate2::write::GzEncoder;
use trainer_svc::csv_source::{CsvError, CsvSource};
use trainer_svc::db::Db;
use trainer_svc::db::test_support::TestDb;
use trainer_svc::import::{ImportError, import_csv};

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
fn lenient_mode_skips_and_counts() {
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
    assert_eq!(src.skipped(), 3);
    let skipped_lines: Vec<Option<u64>> = src.skip_examples().iter().map(|e| e.line()).collect();
    assert_eq!(skipped_lines, [Some(3), Some(5), Some(6)]);
}

#[tokio::test]
async fn import_inserts_all_rows() {
    on_each_backend(async |url| {
        let dir = tempfile::tempdir().unwrap();
        let p = write_gz(dir.path(), "good.csv.gz", GOOD);
        let db = Db::connect(url).await.unwrap();
        let mut calls = 0;
        let report = import_csv(&db, &p, |_| calls += 1).await.unwrap();
        assert_eq!(report.rows_imported, 5);
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
        let err = import_csv(&db, &p, |_| {}).await.unwrap_err();
        assert_eq!(err.line(), Some(7), "{err}");
        assert!(matches!(err, ImportError::Csv { .. }));
        assert!(err.to_string().contains("line 7"), "{err}");
        assert_eq!(db.count_tasks().await.unwrap(), 0);

        // Past the first batch too: 2500 good rows, then a bad line.
        let mut big = String::from("user_id,item_id,topic,correct,seconds,ts\n");
        for i in 0..2500 {
            big.push_str(&format!("u{},i,t,1,,{i}\n", i % 7));
        }
        big.push_str("u1,i,t,1,,\n");
        let p = write_gz(dir.path(), "big.gz", &big);
        let err = import_csv(&db, &p, |_| {}).await.unwrap_err();
        assert_eq!(err.line(), Some(2502), "{err}");
        assert_eq!(db.count_tasks().await.unwrap(), 0);
        // The connection is usable afterwards and a good import works.
        let p = write(dir.path(), "good.csv", GOOD);
        assert_eq!(import_csv(&db, &p, |_| {}).await.unwrap().rows_imported, 5);
    })
    .await;
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
        let report = import_csv(&db, &path, |_| {}).await.unwrap();
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
