//! Running a model artifact with ONNX Runtime (`ort`), the one way both
//! services execute models: inference on the request path, the trainer to
//! check an export against its in-Rust forward pass and to score the active
//! model on a new hold-out.
//!
//! `Session::run` needs `&mut`, so a model keeps a small pool of sessions and
//! a request takes whichever is free instead of queueing behind one lock.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::SessionInputValue;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use crate::artifact::{
    Artifact, ArtifactError, INPUT_FEATURES, IndexField, OUTPUT_LOG_SECONDS, OUTPUT_P_CORRECT,
};
use crate::features::{FEATURE_COUNT, RowKeys};
use crate::keymap::KeyMap;
use crate::priors::PriorTable;

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Why a model cannot run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The ONNX Runtime library could not be loaded.
    #[error("loading ONNX Runtime from {path}: {reason}")]
    Library {
        /// Where we looked.
        path: String,
        /// What failed.
        reason: String,
    },
    /// [`init`] was not called.
    #[error("ONNX Runtime is not initialised")]
    NotInitialised,
    /// The artifact breaks the contract.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// ONNX Runtime refused the model or a run.
    #[error("onnxruntime: {0}")]
    Ort(String),
    /// The model produced something outside the contract.
    #[error("model output: {0}")]
    Output(String),
}

impl From<ort::Error> for RuntimeError {
    fn from(e: ort::Error) -> Self {
        RuntimeError::Ort(e.to_string())
    }
}

/// Where to load ONNX Runtime from: the configured path, else `ORT_DYLIB_PATH`
/// (which `.cargo/config.toml` sets for `cargo run` and `cargo test`), else
/// `.ort/libonnxruntime.so` where `scripts/setup-ort.sh` puts it — in the
/// working directory or above the executable (a checkout's `target/release/`).
pub fn library_path(configured: Option<&Path>) -> std::path::PathBuf {
    const LOCAL: &str = ".ort/libonnxruntime.so";
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return p.into();
    }
    if Path::new(LOCAL).exists() {
        return LOCAL.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().map(|d| d.join(LOCAL)).find(|p| p.exists()))
        .unwrap_or_else(|| LOCAL.into())
}

/// Loads the ONNX Runtime shared library once per process; later calls are no-ops.
pub fn init(library: &Path) -> Result<(), RuntimeError> {
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    let lib_err = |reason: String| RuntimeError::Library {
        path: library.display().to_string(),
        reason,
    };
    if !library.exists() {
        return Err(lib_err("file not found (run scripts/setup-ort.sh)".into()));
    }
    let env = ort::init_from(library)
        .map_err(|e| lib_err(e.to_string()))?
        .with_name("taskcast")
        .build()
        .map_err(|e| lib_err(e.to_string()))?;
    // A concurrent initialiser may have won; its environment is as good as ours.
    let _ = ENVIRONMENT.set(env);
    Ok(())
}

/// One row's output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Output {
    /// Probability of a correct first answer.
    pub p_correct: f32,
    /// 10th, 50th and 90th percentiles of log-seconds.
    pub log_seconds: [f32; 3],
}

/// A loaded, runnable artifact.
pub struct OnnxModel {
    /// What the file says about itself.
    pub artifact: Artifact,
    /// Its priors, ready for the feature code.
    pub priors: PriorTable,
    lookups: Vec<(String, IndexField, KeyMap<i64>)>,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("version", &self.artifact.metadata.version)
            .finish()
    }
}

impl OnnxModel {
    /// Parses and checks `bytes`, then builds `pool` sessions (at least one)
    /// with one intra-op thread each: requests are small and many, so
    /// parallelism comes from running several at once, not from splitting one.
    pub fn load(bytes: &[u8], pool: usize) -> Result<OnnxModel, RuntimeError> {
        let artifact = Artifact::parse(bytes)?;
        let env = ENVIRONMENT.get().ok_or(RuntimeError::NotInitialised)?;
        let mut sessions = Vec::new();
        for _ in 0..pool.max(1) {
            let session = Session::builder(env)?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| RuntimeError::Ort(e.to_string()))?
                .with_intra_threads(1)
                .map_err(|e| RuntimeError::Ort(e.to_string()))?
                .with_inter_threads(1)
                .map_err(|e| RuntimeError::Ort(e.to_string()))?
                .commit_from_memory(bytes)?;
            sessions.push(Mutex::new(session));
        }
        let priors = PriorTable::new(&artifact.metadata.priors);
        let lookups = artifact
            .metadata
            .index_inputs
            .iter()
            .map(|i| (i.name.clone(), i.field, i.lookup()))
            .collect();
        Ok(OnnxModel {
            artifact,
            priors,
            lookups,
            sessions,
            next: AtomicUsize::new(0),
        })
    }

    /// How many feature columns the model reads: its schema's width.
    pub fn width(&self) -> usize {
        self.artifact.metadata.schema().width()
    }

    /// Runs `x` with `keys[i]` for row `i`'s index inputs. `x` is row-major,
    /// either `[n, width]` or full rows of this build (`[n, FEATURE_COUNT]`),
    /// of which a model of an older schema reads the leading columns (the
    /// trainer scores an older active version on the rows it built for the
    /// new one). Checks every output is finite and a probability where it
    /// must be.
    pub fn run(&self, x: &[f32], keys: &[RowKeys]) -> Result<Vec<Output>, RuntimeError> {
        let n = keys.len();
        let width = self.width();
        let compact: Vec<f32>;
        let x = if x.len() == n * width {
            x
        } else if x.len() == n * FEATURE_COUNT {
            compact = x
                .chunks_exact(FEATURE_COUNT)
                .flat_map(|row| &row[..width])
                .copied()
                .collect();
            &compact
        } else {
            return Err(RuntimeError::Output(format!(
                "{} feature values for {n} rows of {width}",
                x.len()
            )));
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        // Index inputs first, so the borrowed tensors below can point at them.
        let indices: Vec<Vec<i64>> = self
            .lookups
            .iter()
            .map(|(_, field, lookup)| {
                keys.iter()
                    .map(|k| {
                        let key = match field {
                            IndexField::User => k.user,
                            IndexField::Topic => k.topic,
                            IndexField::Difficulty => k.difficulty,
                            IndexField::Item => k.item,
                        };
                        lookup.get(&key).copied().unwrap_or(0)
                    })
                    .collect()
            })
            .collect();
        // Borrowed names and tensor views: ONNX Runtime reads the caller's
        // buffers directly instead of a copy of each.
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(1 + self.lookups.len());
        inputs.push((
            Cow::Borrowed(INPUT_FEATURES),
            TensorRef::from_array_view(([n, width], x))?.into(),
        ));
        for ((name, _, _), idx) in self.lookups.iter().zip(&indices) {
            inputs.push((
                Cow::Borrowed(name.as_str()),
                TensorRef::from_array_view(([n], idx.as_slice()))?.into(),
            ));
        }
        let mut session = self.session();
        let outputs = session.run(inputs)?;
        let output = |name: &str| {
            outputs
                .get(name)
                .ok_or_else(|| RuntimeError::Output(format!("no output named {name}")))
        };
        let (_, p) = output(OUTPUT_P_CORRECT)?.try_extract_tensor::<f32>()?;
        let (_, t) = output(OUTPUT_LOG_SECONDS)?.try_extract_tensor::<f32>()?;
        if p.len() != n || t.len() != 3 * n {
            return Err(RuntimeError::Output(format!(
                "expected {n} probabilities and {} log-seconds, got {} and {}",
                3 * n,
                p.len(),
                t.len()
            )));
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let q = [t[3 * i], t[3 * i + 1], t[3 * i + 2]];
            let pc = p[i];
            if !(0.0..=1.0).contains(&pc) || q.iter().any(|v| !v.is_finite()) {
                return Err(RuntimeError::Output(format!(
                    "row {i}: p_correct {pc}, log_seconds {q:?}"
                )));
            }
            out.push(Output {
                p_correct: pc,
                log_seconds: q,
            });
        }
        Ok(out)
    }

    /// A free session, or the next one in turn when all are busy.
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        let len = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..len {
            if let Ok(s) = self.sessions[(start + k) % len].try_lock() {
                return s;
            }
        }
        // A poisoned lock only means another request panicked mid-run; the
        // session itself holds no state between runs, so keep using it.
        match self.sessions[start % len].lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
