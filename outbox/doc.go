// Package outbox publishes events that an application wrote into an outbox
// table of its own PostgreSQL database, in the same transactions as its
// data: an event is published if and only if its transaction commits.
//
// A Source consumes one table. Several Herald nodes may run a Source on the
// same table: one at a time holds a session advisory lock and consumes, the
// others wait for it, and one of them takes over within seconds after the
// holder's session ends (the process died, or its connection did). The
// consumer reads rows in id order with FOR UPDATE, publishes them, and
// deletes them in the same transaction: a row that a late transaction
// commits under a lower id is still in the table at the next read, so it
// is published then, never skipped (docs/outbox.md says which order
// subscribers see). Every row's event carries a hub.Draft.Dedupe key made
// of the database, the table and the row's id, checked by the broker in the
// step that appends, so a row published again after a crash between
// publishing and deleting it is appended once.
//
// A row that can never be published (an invalid topic, type or key, data
// too large) is moved to the dead-letter table with the reason, in the same
// transaction, and counted; it never holds back the rows after it.
package outbox
