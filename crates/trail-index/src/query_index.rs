//! The query index: one tantivy document per log record, keyed by LSN, with
//! the fields a query filters on as untokenized terms. tantivy, not sled:
//! measured here it indexes an audit event's keys about ten times faster
//! and fifty times smaller (docs/DECISIONS.md). It holds only what the log
//! can rebuild; a query answers LSNs and the records themselves are read
//! from the log.
//!
//! The watermark (the last LSN taken in and its hash) is the payload of the
//! commit that made the documents durable: tantivy commits entries and
//! payload together, so a crash never leaves one without the other.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::collector::TopDocs;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, SchemaBuilder, FAST, STRING};
use tantivy::{Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};
use trail_log::{Head, Lsn, RecordHash};

use crate::error::{IndexError, Result};
use crate::event::{outcome_name, IndexedRecord, Kind};
use crate::filter::{Filter, TextMatch, TimeRange};

/// The layout version in every commit payload; an index with another one
/// is rebuilt (docs/FORMAT.md, "Query index").
const PAYLOAD_VERSION: &str = "trail-query-v1";

/// Memory the single indexing thread may buffer before it writes a segment.
const WRITER_MEMORY_BYTES: usize = 64 << 20;

/// Between an attribute's name and value in its term: a byte no name
/// holds in practice, so `a=b` `c` and `a` `b=c` stay apart.
const ATTRIBUTE_SEPARATOR: char = '\u{1f}';

/// The index's fields.
#[derive(Clone, Copy, Debug)]
struct Fields {
    lsn: Field,
    recorded_at: Field,
    occurred_at: Field,
    actor: Field,
    resource: Field,
    action: Field,
    trace_id: Field,
    outcome: Field,
    kind: Field,
    attribute: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = SchemaBuilder::new();
    let fields = Fields {
        // Numbers are fast fields (columns) only: ranges on them and the
        // order by LSN read the column; a term dictionary of values that
        // are nearly all distinct would cost more than every other field.
        lsn: builder.add_u64_field("lsn", FAST),
        recorded_at: builder.add_i64_field("recorded_at", FAST),
        occurred_at: builder.add_i64_field("occurred_at", FAST),
        actor: builder.add_text_field("actor", STRING),
        resource: builder.add_text_field("resource", STRING),
        action: builder.add_text_field("action", STRING),
        trace_id: builder.add_text_field("trace_id", STRING),
        outcome: builder.add_text_field("outcome", STRING),
        kind: builder.add_text_field("kind", STRING),
        attribute: builder.add_text_field("attribute", STRING),
    };
    (builder.build(), fields)
}

fn attribute_term(key: &str, value: &str) -> String {
    format!("{key}{ATTRIBUTE_SEPARATOR}{value}")
}

/// The commit payload for `head`.
fn payload(head: Head) -> String {
    format!(
        "{PAYLOAD_VERSION} {} {}",
        head.lsn.0,
        hex::encode(head.hash.0)
    )
}

/// The watermark in a commit payload; `None` for an unknown layout or a
/// payload that does not parse (the index is then rebuilt).
fn parse_payload(payload: &str) -> Option<Head> {
    let mut parts = payload.split(' ');
    if parts.next()? != PAYLOAD_VERSION {
        return None;
    }
    let lsn = parts.next()?.parse().ok()?;
    let hash: [u8; 32] = hex::decode(parts.next()?).ok()?.try_into().ok()?;
    parts.next().is_none().then_some(Head {
        lsn: Lsn(lsn),
        hash: RecordHash(hash),
    })
}

/// The writing side, owned by the index's follower thread.
pub struct QueryIndexWriter {
    path: PathBuf,
    writer: IndexWriter,
    fields: Fields,
    reader: Arc<QueryIndexReader>,
    watermark: Option<Head>,
}

/// The searching side, shared by every query.
pub struct QueryIndexReader {
    path: PathBuf,
    reader: IndexReader,
    fields: Fields,
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// An index with this watermark (`None`: empty).
    Existing(Option<Head>),
    /// Nothing usable was there (missing, damaged, another layout): a new,
    /// empty index was created. The reason, for the log line.
    Created(String),
}

/// How often, and how far apart, [`open_writer`] tries a busy writer lock.
const WRITER_LOCK_ATTEMPTS: u32 = 10;
const WRITER_LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The index's writer. tantivy reports every failure to take its writer
/// lock as `LockBusy` (a held lock and an error of the lock call alike),
/// and a store that does not open leaves its log without Query until the
/// server restarts; a CI run once met `LockBusy` on a fresh directory that
/// no other writer could hold. So a busy lock is tried again for about a
/// second, each failure logged with what locking the file ourselves says;
/// a lock that stays busy (another writer) is then the error, as before.
fn open_writer(index: &Index, options: &IndexWriterOptions, path: &Path) -> Result<IndexWriter> {
    let mut attempt = 1;
    loop {
        match index.writer_with_options(options.clone()) {
            Err(tantivy::TantivyError::LockFailure(
                tantivy::directory::error::LockError::LockBusy,
                _,
            )) if attempt < WRITER_LOCK_ATTEMPTS => {
                let probe = std::fs::File::open(path.join(".tantivy-writer.lock"))
                    .map_err(|error| error.to_string())
                    .and_then(|file| file.try_lock().map_err(|error| error.to_string()));
                tracing::warn!(path = %path.display(), attempt, ?probe, "the query index's writer lock is busy: trying again");
                attempt += 1;
                std::thread::sleep(WRITER_LOCK_PAUSE);
            }
            other => return other.map_err(IndexError::query("opening its writer", path)),
        }
    }
}

impl QueryIndexWriter {
    /// Opens the index at `path`, or creates an empty one when there is
    /// none, or when what is there does not open, has another schema or
    /// an unreadable watermark: a derived store is rebuilt, never trusted.
    ///
    /// # Errors
    /// The directory cannot be created or written.
    pub fn open(path: &Path) -> Result<(QueryIndexWriter, Opened)> {
        let (schema, fields) = schema();
        let existing = match Index::open_in_dir(path) {
            Ok(index) if index.schema() == schema => match index.load_metas() {
                Ok(metas) => match metas.payload.as_deref().map(parse_payload) {
                    None => Ok((index, None)),
                    Some(Some(head)) => Ok((index, Some(head))),
                    Some(None) => Err(format!(
                        "its watermark {:?} is not `{PAYLOAD_VERSION} <lsn> <hash>`",
                        metas.payload.unwrap_or_default()
                    )),
                },
                Err(error) => Err(format!("its metadata does not load: {error}")),
            },
            Ok(_) => Err("it has another schema".to_owned()),
            Err(tantivy::TantivyError::OpenDirectoryError(_)) if !path.exists() => {
                Err("it does not exist".to_owned())
            }
            Err(error) => Err(format!("it does not open: {error}")),
        };
        let (index, opened) = match existing {
            Ok((index, watermark)) => (index, Opened::Existing(watermark)),
            Err(reason) => (Self::create(path, schema)?, Opened::Created(reason)),
        };
        let watermark = match &opened {
            Opened::Existing(watermark) => *watermark,
            Opened::Created(_) => None,
        };
        Self::from_index(path, index, fields, watermark).map(|writer| (writer, opened))
    }

    fn create(path: &Path, schema: Schema) -> Result<Index> {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(IndexError::io("removing", path))?;
        }
        std::fs::create_dir_all(path).map_err(IndexError::io("creating", path))?;
        Index::create_in_dir(path, schema).map_err(IndexError::query("creating", path))
    }

    fn from_index(
        path: &Path,
        index: Index,
        fields: Fields,
        watermark: Option<Head>,
    ) -> Result<QueryIndexWriter> {
        // One indexing thread and one merge thread per log: on a server with
        // many logs, tantivy's default of four merge threads each would be
        // most of the process's threads.
        let options = IndexWriterOptions::builder()
            .memory_budget_per_thread(WRITER_MEMORY_BYTES)
            .num_worker_threads(1)
            .num_merge_threads(1)
            .build();
        let writer = open_writer(&index, &options, path)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(IndexError::query("opening its reader", path))?;
        Ok(QueryIndexWriter {
            path: path.to_path_buf(),
            writer,
            fields,
            reader: Arc::new(QueryIndexReader {
                path: path.to_path_buf(),
                reader,
                fields,
            }),
            watermark,
        })
    }

    /// Empties the index (its watermark goes too), durably.
    ///
    /// # Errors
    /// tantivy failures.
    pub fn clear(&mut self) -> Result<()> {
        self.writer
            .delete_all_documents()
            .map_err(IndexError::query("clearing", &self.path))?;
        self.writer
            .commit()
            .map_err(IndexError::query("committing the clear", &self.path))?;
        self.watermark = None;
        self.reload()
    }

    /// The searching side.
    #[must_use]
    pub fn reader(&self) -> Arc<QueryIndexReader> {
        Arc::clone(&self.reader)
    }

    /// The last record durably taken in.
    #[must_use]
    pub fn watermark(&self) -> Option<Head> {
        self.watermark
    }

    /// Buffers one document per record (visible after [`Self::commit`]).
    ///
    /// # Errors
    /// tantivy failures.
    pub fn add(&mut self, records: &[IndexedRecord]) -> Result<()> {
        let fields = self.fields;
        for record in records {
            let event = &record.event;
            let mut document = TantivyDocument::new();
            document.add_u64(fields.lsn, record.lsn);
            document.add_i64(fields.recorded_at, record.recorded_at_unix_nanos);
            document.add_i64(fields.occurred_at, event.occurred_at_unix_nanos);
            for (field, value) in [
                (fields.actor, event.actor.as_str()),
                (fields.resource, event.resource.as_str()),
                (fields.action, event.action.as_str()),
                (fields.trace_id, event.trace_id.as_str()),
            ] {
                if !value.is_empty() {
                    document.add_text(field, value);
                }
            }
            document.add_text(fields.outcome, outcome_name(record.outcome()));
            document.add_text(fields.kind, record.kind.as_str());
            for (key, value) in &event.attributes {
                document.add_text(fields.attribute, attribute_term(key, value));
            }
            self.writer
                .add_document(document)
                .map_err(IndexError::query("adding a document", &self.path))?;
        }
        Ok(())
    }

    /// Makes everything added durable and visible, with `through` as the
    /// watermark in the same commit.
    ///
    /// # Errors
    /// tantivy failures.
    pub fn commit(&mut self, through: Head) -> Result<()> {
        if let Some(watermark) = self.watermark {
            assert!(
                through.lsn >= watermark.lsn,
                "query index watermark goes back from {} to {}",
                watermark.lsn,
                through.lsn
            );
        }
        let mut prepared = self
            .writer
            .prepare_commit()
            .map_err(IndexError::query("preparing a commit", &self.path))?;
        prepared.set_payload(&payload(through));
        prepared
            .commit()
            .map_err(IndexError::query("committing", &self.path))?;
        self.watermark = Some(through);
        self.reload()
    }

    fn reload(&self) -> Result<()> {
        self.reader
            .reader
            .reload()
            .map_err(IndexError::query("reloading its reader", &self.path))
    }
}

/// One page of a query's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsnPage {
    /// The matching LSNs, in the order asked for.
    pub lsns: Vec<u64>,
    /// Whether more match past the last one.
    pub more: bool,
}

/// Where a page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// The last LSN of the previous page (`None`: the first page).
    pub after: Option<u64>,
    /// Newest first.
    pub descending: bool,
    /// Records per page.
    pub limit: usize,
    /// The index's watermark the page is answered at: nothing past it is
    /// returned, so every page of one answer sees the same log.
    pub through: u64,
}

impl QueryIndexReader {
    /// The LSNs matching `filter`, one page of them.
    ///
    /// # Errors
    /// tantivy failures.
    pub fn search(&self, filter: &Filter, page: PageRequest) -> Result<LsnPage> {
        let fields = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut must = |query: Box<dyn Query>| clauses.push((Occur::Must, query));
        for (field, wanted) in [
            (fields.actor, &filter.actor),
            (fields.resource, &filter.resource),
            (fields.action, &filter.action),
        ] {
            if let Some(wanted) = wanted {
                must(text_query(field, wanted));
            }
        }
        let exact = |field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        if let Some(trace) = &filter.trace_id {
            must(exact(fields.trace_id, trace));
        }
        if let Some(outcome) = filter.outcome {
            must(exact(fields.outcome, outcome_name(outcome)));
        }
        if let Some(kind) = filter.kind {
            must(exact(fields.kind, Kind::as_str(kind)));
        }
        for (key, value) in &filter.attributes {
            must(exact(fields.attribute, &attribute_term(key, value)));
        }
        for (field, range) in [
            (fields.recorded_at, filter.recorded),
            (fields.occurred_at, filter.occurred),
        ] {
            if range != TimeRange::default() {
                must(time_query(field, range));
            }
        }
        let (low, high) = match (page.descending, page.after) {
            (false, Some(after)) => (Bound::Excluded(after), Bound::Included(page.through)),
            (false, None) | (true, None) => (Bound::Included(1), Bound::Included(page.through)),
            (true, Some(after)) => (
                Bound::Included(1),
                Bound::Excluded(after.min(page.through.saturating_add(1))),
            ),
        };
        let term = |lsn| Term::from_field_u64(fields.lsn, lsn);
        must(Box::new(RangeQuery::new(low.map(term), high.map(term))));
        let query = BooleanQuery::new(clauses);
        let order = if page.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        let limit = page.limit.max(1);
        let searcher = self.reader.searcher();
        let found = searcher
            .search(
                &query,
                &TopDocs::with_limit(limit + 1).order_by_fast_field::<u64>("lsn", order),
            )
            .map_err(IndexError::query("searching", &self.path))?;
        let more = found.len() > limit;
        let lsns = found.into_iter().take(limit).map(|(lsn, _)| lsn).collect();
        Ok(LsnPage { lsns, more })
    }

    /// Documents in the index (for metrics and tests).
    #[must_use]
    pub fn documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

fn text_query(field: Field, wanted: &TextMatch) -> Box<dyn Query> {
    match wanted {
        TextMatch::Exact(value) => Box::new(TermQuery::new(
            Term::from_field_text(field, value),
            IndexRecordOption::Basic,
        )),
        TextMatch::Prefix(prefix) => {
            // Every value starting with `prefix` sorts in [prefix, next),
            // where `next` is the first string past all of them (UTF-8
            // byte order is code point order).
            let upper = prefix_successor(prefix).map_or(Bound::Unbounded, |next| {
                Bound::Excluded(Term::from_field_text(field, &next))
            });
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_text(field, prefix)),
                upper,
            ))
        }
    }
}

/// The smallest string greater than every string that starts with
/// `prefix`; `None` when there is none (all of its characters are the
/// largest one).
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        // Skip the surrogate range, which no `char` holds.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn time_query(field: Field, range: TimeRange) -> Box<dyn Query> {
    let term = |t| Term::from_field_i64(field, t);
    Box::new(RangeQuery::new(
        range
            .since
            .map_or(Bound::Unbounded, |since| Bound::Included(term(since))),
        range
            .until
            .map_or(Bound::Unbounded, |until| Bound::Excluded(term(until))),
    ))
}

impl crate::driver::DerivedStore for QueryIndexWriter {
    const NAME: &'static str = "query index";

    fn apply(&mut self, records: &[trail_log::StoredRecord]) -> Result<()> {
        let decoded: Vec<IndexedRecord> = records.iter().map(IndexedRecord::from_stored).collect();
        self.add(&decoded)
    }

    fn commit(&mut self, through: Head) -> Result<()> {
        QueryIndexWriter::commit(self, through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_is_past_every_extension() {
        assert_eq!(prefix_successor("order/").as_deref(), Some("order0"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
    }

    #[test]
    fn payload_round_trips_and_other_layouts_are_refused() {
        let head = Head {
            lsn: Lsn(42),
            hash: RecordHash([7; 32]),
        };
        assert_eq!(parse_payload(&payload(head)), Some(head));
        assert_eq!(parse_payload("trail-query-v0 42 00"), None);
        assert_eq!(parse_payload(&format!("{} extra", payload(head))), None);
    }
}
