//! The driver-loop tests' state machine: the list of commands a group applied, in log order,
//! with snapshot and restore so log compaction and InstallSnapshot (RAFT-8) are exercised.
//! (Above the node, the host's machines — `decree_host::machines::CommandLog` among them —
//! play this part.)

use decree_types::LogIndex;
use serde::{Deserialize, Serialize};

use crate::msg::{Entry, EntryPayload};

/// An append-only list of applied commands, with the applied index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandList {
    applied: LogIndex,
    commands: Vec<(LogIndex, Vec<u8>)>,
}

/// A snapshot that does not decode (corrupt or from another state machine).
#[derive(Debug, thiserror::Error)]
#[error("command list snapshot does not decode: {0}")]
pub struct SnapshotDecodeError(#[from] postcard::Error);

impl CommandList {
    /// An empty list at applied index 0.
    pub fn new() -> Self {
        CommandList::default()
    }

    /// Applies one committed entry. Entries must come in log order without gaps (INV-R9);
    /// a violation is a driver bug, so it is asserted.
    pub fn apply(&mut self, entry: &Entry) {
        assert_eq!(
            entry.index,
            self.applied.next(),
            "INV-R9: entries are applied in order without gaps"
        );
        self.applied = entry.index;
        if let EntryPayload::Command(bytes) = &entry.payload {
            self.commands.push((entry.index, bytes.clone()));
        }
    }

    /// The index of the last applied entry.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Every applied command with its index, in log order.
    pub fn commands(&self) -> &[(LogIndex, Vec<u8>)] {
        &self.commands
    }

    /// The whole state as bytes (for `Node::compact` and InstallSnapshot).
    pub fn snapshot(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Replaces the state with a snapshot's.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotDecodeError> {
        *self = postcard::from_bytes(bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_types::Term;

    fn entry(index: u64, payload: EntryPayload) -> Entry {
        Entry { term: Term(1), index: LogIndex(index), payload }
    }

    #[test]
    fn apply_snapshot_restore_round_trip() {
        let mut list = CommandList::new();
        list.apply(&entry(1, EntryPayload::Noop));
        list.apply(&entry(2, EntryPayload::Command(b"a".to_vec())));
        let bytes = list.snapshot();
        let mut other = CommandList::new();
        other.restore(&bytes).unwrap();
        assert_eq!(other, list);
        assert_eq!(other.applied(), LogIndex(2));
        assert_eq!(other.commands(), &[(LogIndex(2), b"a".to_vec())]);
        assert!(other.restore(&[0xff, 0xff, 0xff]).is_err());
    }
}
