//! Resources the SQLite store read lately, by ARN, so that a read such as GetChannel's is
//! answered from memory rather than by a trip through sqlx's connection thread. Sound because
//! one process opens the file: every change goes through its commit loop, which empties the
//! cache before a group of changes that touches resources begins and again once it has
//! committed (or failed). A read that began before such a group ended may have read the old
//! row; it does not fill the cache, because the group moved the generation it started with.
//! (PostgreSQL stores are shared by nodes that write behind each other's back: no cache there.)

use std::collections::HashMap;
use std::sync::Mutex;

use super::Record;

/// Beyond this many records, the cache starts over (it holds what is read often).
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct RecordCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Moved on by every invalidation.
    generation: u64,
    records: HashMap<String, Record>,
}

impl RecordCache {
    pub fn get(&self, arn: &str) -> Option<Record> {
        self.inner.lock().expect("record cache lock").records.get(arn).cloned()
    }

    /// The generation a read begins in (what [`RecordCache::fill`] checks).
    pub fn generation(&self) -> u64 {
        self.inner.lock().expect("record cache lock").generation
    }

    /// Keeps a record read from the file in a read that began in `generation`, unless a
    /// change has touched resources since.
    pub fn fill(&self, generation: u64, record: &Record) {
        let mut inner = self.inner.lock().expect("record cache lock");
        if inner.generation != generation {
            return;
        }
        if inner.records.len() >= CAPACITY {
            inner.records.clear();
        }
        inner.records.insert(record.arn.clone(), record.clone());
    }

    /// Forgets every record (changes to resources are under way or just committed).
    pub fn invalidate(&self) {
        let mut inner = self.inner.lock().expect("record cache lock");
        inner.generation += 1;
        inner.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::RecordCache;
    use crate::store::Record;
    use openivs_model::ResourceType;

    fn record(arn: &str) -> Record {
        Record::new(ResourceType::Channel, "123456789012", "us-west-2", arn, &serde_json::json!({}))
    }

    #[test]
    fn a_read_that_raced_a_change_does_not_fill() {
        let cache = RecordCache::default();
        let began = cache.generation();
        cache.invalidate();
        cache.fill(began, &record("arn:a"));
        assert_eq!(cache.get("arn:a"), None);
        let began = cache.generation();
        cache.fill(began, &record("arn:a"));
        assert_eq!(cache.get("arn:a"), Some(record("arn:a")));
        cache.invalidate();
        assert_eq!(cache.get("arn:a"), None);
    }
}
