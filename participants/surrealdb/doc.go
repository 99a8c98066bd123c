// Package surrealdb is the SurrealDB participant: it gives SurrealDB, which
// has no PREPARE, a durable prepare.
//
// The package has few exported types: Config (with DefaultConfig and
// Validate), Participant (Open; it implements participants.Participant and
// participants.CommitRecorder, and adds GC), TestingKnobs and
// ErrProtocolViolation. Branches are returned as participants.Branch.
//
// # How a branch works
//
// Branch operations are record-level (read, create, upsert, merge, delete
// on record ids) plus read-only SELECTs. Writes are staged: the branch
// loads each record it touches once, computes after-images in memory, and
// answers reads from committed data plus its own staged writes. Every
// record carries a version field (Config.VersionField) that the adapter
// sets to a fresh ULID per writing branch; the branch remembers the version
// it first saw of every record it read or wrote.
//
// Prepare is one request holding up to two text transactions. The first, a
// dry-run, is sent only when a written table has constraints (SCHEMAFULL,
// typed or asserted fields, UNIQUE indexes, events; introspected once and
// cached): it applies the after-images and THROWs a marker, so it never
// commits; it tells whether the commit could fail. The second checks that
// the GID is neither finished nor already prepared (a repeated prepare
// votes YES again), checks every version, CREATEs one lock record per
// written record and per UNIQUE value written (a lock held by another
// branch fails the CREATE), and CREATEs the intent: the GID, the lock keys
// and the after-images. The intent and the locks are the durable prepared
// state; they survive restarts and Close.
//
// CommitPrepared is one transaction that deletes the locks, applies the
// after-images, deletes the intent and writes a done marker;
// RollbackPrepared deletes the locks and the intent and writes an abort
// tombstone, so a late Prepare of the GID votes NO. Both are idempotent and
// retry write conflicts. InDoubt lists intents by GID prefix with a range
// scan on the intent ids.
//
// CommitOnePhase is one transaction that checks versions, touches the lock
// keys, applies the after-images and writes a done marker too. So every
// commit of a GID leaves its marker, atomically with the commit, and
// Committed (participants.CommitRecorder) can tell whether a GID committed
// — how the coordinator answers for a one-phase commit, for which it logs
// no decision. Committed is a fence: without a done marker it writes an
// abort tombstone before answering false, so the GID can no longer commit
// (a concurrent one-phase commit conflicts on the marker key: the first to
// commit wins). Markers are deleted after Config.MarkerRetention by a
// collector (GC every Config.MarkerGCInterval); past it Committed answers
// false.
//
// # Rules for the database
//
//   - Writers that bypass the coordinator must not write records while a
//     branch holds their lock, or set the version field themselves; opt
//     tables in to Config.GuardTables to have an event enforce both. They
//     must write inside text transactions (BEGIN; ...; COMMIT;): in 3.0.2 a
//     single statement outside one does not detect write conflicts (200
//     concurrent `UPDATE t:1 SET n = n + 1` all answer OK and n ends near
//     185), so neither its own updates nor the guard's race with a prepare
//     are safe. Every write of this adapter runs in a text transaction.
//   - Schema changes (fields, indexes, events) must not run while intents
//     exist on the table: the dry-run validated the after-images against
//     the schema at prepare time. Removing a table with intents makes their
//     commit fail (and be retried) until it exists again.
//   - The adapter's tables (Config.LockTable, IntentTable, MarkerTable) are
//     its own; branches cannot touch them.
//
// Facts about SurrealDB 3.0.2 this package relies on are written where
// they are used; the main ones: text transactions are atomic, a failed one
// sends no result for its COMMIT, statements after the failing one come
// back as kind Query/Cancelled and before it as Query/NotExecuted; CREATE
// of an existing id fails with kind AlreadyExists naming the id; write
// conflicts come as kind Internal "... can be retried"; constraint failures
// also come as kind Internal, with no details; SELECT and DELETE on a
// table that does not exist fail (kind NotFound).
package surrealdb
