//! What the self-check looks for (`mirrorctl check`, docs/contract.md §7): each kind's name in
//! reports, details and metrics, and whether `repair` makes it right. Both dialects' integrity
//! statements return these.

/// What the self-check looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Inconsistency {
    /// `last_message_*` disagree with the conversation's messages (docs/contract.md §3).
    LastMessageWrong,
    /// A live message's `recipient_id` disagrees with its conversation's participants.
    RecipientWrong,
    /// `last_message_id` names a message that is deleted, or missing while the
    /// conversation has mirrored messages.
    DanglingLastMessage,
    /// A stub conversation (its messages arrived, its own document never did) older than
    /// the threshold.
    OldStub,
    /// A live message in a tombstoned conversation.
    LiveMessageOfDeletedConversation,
    /// A live follow edge from a user to the same user.
    SelfFollow,
}

impl Inconsistency {
    pub const ALL: [Inconsistency; 6] = [
        Inconsistency::LastMessageWrong,
        Inconsistency::RecipientWrong,
        Inconsistency::DanglingLastMessage,
        Inconsistency::OldStub,
        Inconsistency::LiveMessageOfDeletedConversation,
        Inconsistency::SelfFollow,
    ];

    /// Its name in reports, details and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Inconsistency::LastMessageWrong => "lastMessageWrong",
            Inconsistency::RecipientWrong => "recipientWrong",
            Inconsistency::DanglingLastMessage => "danglingLastMessage",
            Inconsistency::OldStub => "oldStub",
            Inconsistency::LiveMessageOfDeletedConversation => "liveMessageOfDeletedConversation",
            Inconsistency::SelfFollow => "selfFollow",
        }
    }

    pub fn from_name(name: &str) -> Option<Inconsistency> {
        Inconsistency::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether `repair` (recomputing the derived columns) makes it right. The others come
    /// from the source's data (or from events still to arrive): the source must fix them.
    pub fn repairable(self) -> bool {
        matches!(
            self,
            Inconsistency::LastMessageWrong
                | Inconsistency::RecipientWrong
                | Inconsistency::DanglingLastMessage
        )
    }
}
