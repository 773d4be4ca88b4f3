//! String interning for labels (learners, topics, difficulties, items):
//! here, apart from the dataset and the sources, because both use it (the
//! dataset's vocabularies, an in-memory source's packed rows).

use std::collections::HashMap;

/// String interner for vocabularies; index 0 is reserved for "none".
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    ids: HashMap<String, u32>,
    /// Labels by index; `labels[0]` is the empty label.
    pub labels: Vec<String>,
}

impl Vocab {
    /// An empty vocabulary: only the empty label, at index 0.
    pub(crate) fn new() -> Self {
        Vocab {
            ids: HashMap::new(),
            labels: vec![String::new()],
        }
    }

    /// `label`'s index, added if new (the empty label is 0).
    pub(crate) fn id(&mut self, label: &str) -> u32 {
        if label.is_empty() {
            return 0;
        }
        if let Some(&i) = self.ids.get(label) {
            return i;
        }
        let i = self.labels.len() as u32;
        self.ids.insert(label.to_string(), i);
        self.labels.push(label.to_string());
        i
    }
}
