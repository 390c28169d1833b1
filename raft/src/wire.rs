//! Conversions between openraft's types and the protobuf messages of `proto/raft.proto`. What the
//! transport does not need to look into (entries, snapshot metadata) is postcard-encoded.

use openraft::{CommittedLeaderId, LeaderId};

use crate::proto;
use crate::{NodeId, TypeConfig};

pub type Vote = openraft::Vote<NodeId>;
pub type LogId = openraft::LogId<NodeId>;

/// A message that could not be decoded (a peer of another version, or damage).
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct Malformed(pub String);

impl From<postcard::Error> for Malformed {
    fn from(e: postcard::Error) -> Self {
        Malformed(e.to_string())
    }
}

pub fn vote_to(v: &Vote) -> proto::Vote {
    proto::Vote { term: v.leader_id().term, node_id: v.leader_id().node_id, committed: v.is_committed() }
}

pub fn vote_from(v: Option<proto::Vote>) -> Result<Vote, Malformed> {
    let v = v.ok_or_else(|| Malformed("missing vote".into()))?;
    Ok(Vote { leader_id: LeaderId::new(v.term, v.node_id), committed: v.committed })
}

pub fn log_id_to(l: &LogId) -> proto::LogId {
    proto::LogId { term: l.leader_id.term, node_id: l.leader_id.node_id, index: l.index }
}

pub fn log_id_from(l: proto::LogId) -> LogId {
    LogId::new(CommittedLeaderId::new(l.term, l.node_id), l.index)
}

pub fn opt_log_id_to(l: &Option<LogId>) -> Option<proto::LogId> {
    l.as_ref().map(log_id_to)
}

pub fn opt_log_id_from(l: Option<proto::LogId>) -> Option<LogId> {
    l.map(log_id_from)
}

pub fn append_to(
    rpc: &openraft::raft::AppendEntriesRequest<TypeConfig>,
) -> Result<proto::AppendEntriesRequest, Malformed> {
    let entries = rpc.entries.iter().map(postcard::to_stdvec).collect::<Result<Vec<_>, _>>()?;
    Ok(proto::AppendEntriesRequest {
        vote: Some(vote_to(&rpc.vote)),
        prev_log_id: opt_log_id_to(&rpc.prev_log_id),
        entries,
        leader_commit: opt_log_id_to(&rpc.leader_commit),
    })
}

pub fn append_from(
    msg: proto::AppendEntriesRequest,
) -> Result<openraft::raft::AppendEntriesRequest<TypeConfig>, Malformed> {
    let entries = msg.entries.iter().map(|e| postcard::from_bytes(e)).collect::<Result<Vec<_>, _>>()?;
    Ok(openraft::raft::AppendEntriesRequest {
        vote: vote_from(msg.vote)?,
        prev_log_id: opt_log_id_from(msg.prev_log_id),
        entries,
        leader_commit: opt_log_id_from(msg.leader_commit),
    })
}

pub fn append_response_to(r: &openraft::raft::AppendEntriesResponse<NodeId>) -> proto::AppendEntriesResponse {
    use openraft::raft::AppendEntriesResponse as R;
    use proto::append_entries_response::Result as P;
    let result = match r {
        R::Success => P::Success(proto::Empty {}),
        R::PartialSuccess(m) => P::PartialSuccess(proto::PartialSuccess { matching: opt_log_id_to(m) }),
        R::Conflict => P::Conflict(proto::Empty {}),
        R::HigherVote(v) => P::HigherVote(vote_to(v)),
    };
    proto::AppendEntriesResponse { result: Some(result) }
}

pub fn append_response_from(
    msg: proto::AppendEntriesResponse,
) -> Result<openraft::raft::AppendEntriesResponse<NodeId>, Malformed> {
    use openraft::raft::AppendEntriesResponse as R;
    use proto::append_entries_response::Result as P;
    Ok(match msg.result.ok_or_else(|| Malformed("empty append-entries response".into()))? {
        P::Success(_) => R::Success,
        P::PartialSuccess(p) => R::PartialSuccess(opt_log_id_from(p.matching)),
        P::Conflict(_) => R::Conflict,
        P::HigherVote(v) => R::HigherVote(vote_from(Some(v))?),
    })
}

pub fn vote_request_to(r: &openraft::raft::VoteRequest<NodeId>) -> proto::VoteRequest {
    proto::VoteRequest { vote: Some(vote_to(&r.vote)), last_log_id: opt_log_id_to(&r.last_log_id) }
}

pub fn vote_request_from(m: proto::VoteRequest) -> Result<openraft::raft::VoteRequest<NodeId>, Malformed> {
    Ok(openraft::raft::VoteRequest { vote: vote_from(m.vote)?, last_log_id: opt_log_id_from(m.last_log_id) })
}

pub fn vote_response_to(r: &openraft::raft::VoteResponse<NodeId>) -> proto::VoteResponse {
    proto::VoteResponse {
        vote: Some(vote_to(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id_to(&r.last_log_id),
    }
}

pub fn vote_response_from(m: proto::VoteResponse) -> Result<openraft::raft::VoteResponse<NodeId>, Malformed> {
    Ok(openraft::raft::VoteResponse {
        vote: vote_from(m.vote)?,
        vote_granted: m.vote_granted,
        last_log_id: opt_log_id_from(m.last_log_id),
    })
}

pub fn snapshot_to(
    r: &openraft::raft::InstallSnapshotRequest<TypeConfig>,
) -> Result<proto::InstallSnapshotRequest, Malformed> {
    Ok(proto::InstallSnapshotRequest {
        vote: Some(vote_to(&r.vote)),
        meta: postcard::to_stdvec(&r.meta)?,
        offset: r.offset,
        data: r.data.clone(),
        done: r.done,
    })
}

pub fn snapshot_from(
    m: proto::InstallSnapshotRequest,
) -> Result<openraft::raft::InstallSnapshotRequest<TypeConfig>, Malformed> {
    Ok(openraft::raft::InstallSnapshotRequest {
        vote: vote_from(m.vote)?,
        meta: postcard::from_bytes(&m.meta)?,
        offset: m.offset,
        data: m.data,
        done: m.done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // traces: FM-05
    #[test]
    fn an_append_entries_round_trips_through_protobuf() {
        let req = dermagate_domain::Request::new(5, "tester", dermagate_domain::Command::Noop);
        let entry = openraft::Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 7),
            payload: openraft::EntryPayload::Normal(req.clone()),
        };
        let rpc = openraft::raft::AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 6)),
            entries: vec![entry],
            leader_commit: None,
        };
        let back = append_from(append_to(&rpc).unwrap()).unwrap();
        assert_eq!(back.vote, rpc.vote);
        assert_eq!(back.prev_log_id, rpc.prev_log_id);
        assert_eq!(back.entries.len(), 1);
        assert!(matches!(&back.entries[0].payload, openraft::EntryPayload::Normal(r) if *r == req));
        let resp = openraft::raft::AppendEntriesResponse::HigherVote(Vote::new(4, 2));
        assert_eq!(append_response_from(append_response_to(&resp)).unwrap(), resp);
    }
}
