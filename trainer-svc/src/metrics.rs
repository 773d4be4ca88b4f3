//! Hold-out metrics for correctness and time predictions.
