//! The device's output as a service: binding an `Idempotency-Key` to one request, checking a
//! series link before any compute is spent, storing a report (its images on a quorum first),
//! reading reports, series and images (each read of personal data audited), erasure and export.
//! The analysis itself (decode, quality gate, model) runs in the `inference` crate, called by
//! the API between [`Analyses::claim`] and [`Analyses::store`].

use uuid::Uuid;

use super::identity::Principal;
use super::{now_ms, Context, ServiceError};
use crate::command::Command;
use crate::error::{Entity, ErrorCode, Rejection};
use crate::rbac::Permission;
use crate::reads;
use crate::records::report::IdempotencyBinding;
use crate::records::{AuditEvent, IdempotencyRecord, IdempotencyState, StoredImage, StoredReport};

#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    /// How long a completed key is remembered.
    pub idempotency_ttl_ms: i64,
    /// How long a request may hold its key before a crashed holder is presumed.
    pub idempotency_lease_ms: i64,
}

/// A key as the client sent it, scoped to its organisation and principal, and the fingerprint
/// of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub scoped: String,
    pub fingerprint: String,
}

impl IdempotencyKey {
    pub fn new(principal: &Principal, key: &str, fingerprint: String) -> IdempotencyKey {
        IdempotencyKey { scoped: format!("{}/{}/{key}", principal.org_id, principal.id), fingerprint }
    }
}

/// What to do with a request that carries a key.
pub enum Claim {
    /// The key is ours now: run the analysis.
    Proceed,
    /// The same request completed before: answer with its report.
    Replay(Box<StoredReport>),
}

/// A stored image of a report, with its bytes, ready for the blob quorum.
pub struct ImageCopy {
    pub index: u32,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// What an erasure did.
#[derive(Debug, Clone, Copy)]
pub struct Erased {
    pub reports: usize,
    /// The sequence number of its record in the organisation's audit trail.
    pub audit_seq: u64,
}

pub struct Analyses {
    pub ctx: Context,
    pub settings: AnalysisSettings,
}

fn in_flight() -> ServiceError {
    ServiceError::from(Rejection::IdempotencyInFlight)
}

impl Analyses {
    /// Binds the key to this request, or explains why it cannot be.
    pub async fn claim(&self, principal: &Principal, key: &IdempotencyKey) -> Result<Claim, ServiceError> {
        // Local state may lag the leader: a completed request found here is final, but "in
        // flight" may be stale (completed meanwhile elsewhere), so only the claim through Raft,
        // applied here before it answers, can say that.
        match self.decide(key)? {
            Some(Err(e)) if e.rejection == Some(Rejection::IdempotencyInFlight) => {}
            None => {}
            Some(decided) => return decided,
        }
        let now = now_ms();
        let record = IdempotencyRecord {
            fingerprint: key.fingerprint.clone(),
            state: IdempotencyState::InFlight { lease_until_ms: now + self.settings.idempotency_lease_ms },
            expires_at_ms: now + self.settings.idempotency_ttl_ms,
        };
        let outcome = self
            .ctx
            .commit_outcome(&principal.actor(), Command::ClaimIdempotencyKey { scoped_key: key.scoped.clone(), record })
            .await?;
        match outcome.into_result() {
            Ok(()) => Ok(Claim::Proceed),
            Err(Rejection::IdempotencyDone { report_id }) => self.replay(&report_id),
            Err(Rejection::IdempotencyInFlight) => Err(in_flight()),
            Err(r) => Err(r.into()),
        }
    }

    fn replay(&self, report_id: &Uuid) -> Result<Claim, ServiceError> {
        match reads::report(self.ctx.state.as_ref(), report_id)? {
            Some(r) => Ok(Claim::Replay(Box::new(r))),
            None => Err(in_flight()),
        }
    }

    /// The answer local state gives for the key, if it gives one.
    fn decide(&self, key: &IdempotencyKey) -> Result<Option<Result<Claim, ServiceError>>, ServiceError> {
        let keyer = self.ctx.keyer()?;
        let Some(record) =
            crate::state::get::<IdempotencyRecord>(self.ctx.state.as_ref(), &keyer.idempotency(&key.scoped))?
        else {
            return Ok(None);
        };
        if !record.is_live(now_ms()) {
            return Ok(None);
        }
        if record.fingerprint != key.fingerprint {
            return Ok(Some(Err(Rejection::IdempotencyMismatch.into())));
        }
        match record.state {
            IdempotencyState::InFlight { .. } => Ok(Some(Err(in_flight()))),
            IdempotencyState::Done { report_id } => match reads::report(self.ctx.state.as_ref(), &report_id)? {
                Some(report) => Ok(Some(Ok(Claim::Replay(Box::new(report))))),
                None => Ok(None),
            },
        }
    }

    /// Frees the key after a failure that produced no report, so an immediate retry finds it free.
    pub async fn release(&self, principal: &Principal, key: IdempotencyKey) {
        let cmd = Command::ReleaseIdempotencyKey { scoped_key: key.scoped, fingerprint: key.fingerprint };
        if let Err(e) = self.ctx.commit(&principal.actor(), cmd).await {
            tracing::debug!(error = %e, "idempotency key not released; its lease will expire");
        }
    }

    /// The report a new analysis links to: it must be of the same subject in the caller's
    /// organisation and not already followed by another report (checked again when storing).
    pub async fn check_previous(
        &self,
        principal: &Principal,
        subject: &str,
        previous: Option<Uuid>,
    ) -> Result<Option<StoredReport>, ServiceError> {
        let Some(previous) = previous else { return Ok(None) };
        let state = self.ctx.state.clone();
        let found = self.ctx.read_fresh(|| Ok(reads::report(state.as_ref(), &previous)?)).await?;
        match found {
            Some(p) if p.org_id == principal.org_id && p.subject == subject => match p.report.next_report_id {
                Some(next) => Err(Rejection::PreviousHasSuccessor { previous, next }.into()),
                None => Ok(Some(p)),
            },
            _ => Err(Rejection::PreviousNotInSeries.into()),
        }
    }

    /// Whether the caller's organisation keeps analysed images.
    pub fn keeps_images(&self, principal: &Principal) -> Result<bool, ServiceError> {
        Ok(reads::organization(self.ctx.state.as_ref(), &principal.org_id)?.is_some_and(|o| o.store_images))
    }

    /// Stores a report: its images durably on a quorum first, then the entry naming them. When
    /// the key already produced a report (a retry raced the original), that report is returned
    /// instead (`Ok(Err(original))`).
    pub async fn store(
        &self,
        principal: &Principal,
        mut report: StoredReport,
        key: Option<&IdempotencyKey>,
        copies: Vec<ImageCopy>,
    ) -> Result<Result<StoredReport, Box<StoredReport>>, ServiceError> {
        report.idempotency =
            key.map(|k| IdempotencyBinding { scoped_key: k.scoped.clone(), fingerprint: k.fingerprint.clone() });
        let id = report.id();
        let stores = copies.into_iter().map(|c| async move {
            let (size, digest) = (c.bytes.len() as u64, crate::blob_digest(&c.bytes));
            self.ctx.blobs.store(&digest, c.bytes).await?;
            Ok::<_, ServiceError>(StoredImage {
                report_id: id,
                index: c.index,
                content_type: c.content_type,
                digest,
                size,
            })
        });
        let images = futures::future::try_join_all(stores).await?;
        let command = Command::StoreReport { report: Box::new(report.clone()), images };
        match self.ctx.commit_outcome(&principal.actor(), command).await?.into_result() {
            Ok(()) => Ok(Ok(report)),
            Err(Rejection::IdempotencyDone { report_id }) => {
                match reads::report(self.ctx.state.as_ref(), &report_id)? {
                    Some(original) => Ok(Err(Box::new(original))),
                    None => Err(Rejection::IdempotencyDone { report_id }.into()),
                }
            }
            Err(r) => Err(r.into()),
        }
    }

    /// Appends a read of personal data to the organisation's audit trail; **the read is refused
    /// when its record cannot be committed**.
    async fn audit_read(
        &self,
        principal: &Principal,
        action: &str,
        target: String,
        detail: String,
    ) -> Result<(), ServiceError> {
        let event = AuditEvent {
            action: action.into(),
            actor: principal.actor(),
            org_id: principal.org_id,
            target,
            outcome: "done".into(),
            detail,
        };
        self.ctx.commit(&principal.actor(), Command::Audit(event)).await
    }

    /// A report of the caller's organisation (another organisation's reports do not exist).
    pub async fn report(&self, principal: &Principal, id: Uuid) -> Result<StoredReport, ServiceError> {
        principal.require(Permission::ReportsRead)?;
        let state = self.ctx.state.clone();
        let report = self
            .ctx
            .read_fresh(|| Ok(reads::report(state.as_ref(), &id)?))
            .await?
            .filter(|r| r.org_id == principal.org_id)
            .ok_or_else(|| ServiceError::not_found(Entity::Report))?;
        self.audit_read(principal, "report_read", id.to_string(), String::new()).await?;
        Ok(report)
    }

    /// A stored image of a report: its bytes (fetched from a peer if this node lacks them) and type.
    pub async fn image(&self, principal: &Principal, id: Uuid, index: u32) -> Result<(Vec<u8>, String), ServiceError> {
        let report = self.report(principal, id).await?;
        let image = reads::report_image(self.ctx.state.as_ref(), &report.id(), index)?
            .ok_or_else(|| ServiceError::not_found(Entity::StoredImage))?;
        let bytes = self.ctx.blobs.fetch(&image.digest).await?;
        Ok((bytes, image.content_type))
    }

    /// A subject's reports in time-series order, as of the leader's latest state; the read is
    /// audited as `action` (and refused if its record cannot be committed).
    async fn audited_series(
        &self,
        principal: &Principal,
        subject: &str,
        action: &str,
    ) -> Result<Vec<StoredReport>, ServiceError> {
        principal.require(Permission::ReportsRead)?;
        self.ctx.replicator.linearize().await?;
        let keyer = self.ctx.keyer()?;
        let reports = reads::subject_reports(self.ctx.state.as_ref(), &keyer, &principal.org_id, subject)?;
        if reports.is_empty() {
            return Err(ServiceError::not_found(Entity::Subject));
        }
        let target = keyer.subject(&principal.org_id, subject);
        self.audit_read(principal, action, target, format!("reports={}", reports.len())).await?;
        Ok(reports)
    }

    /// A subject's reports in time-series order.
    pub async fn series(&self, principal: &Principal, subject: &str) -> Result<Vec<StoredReport>, ServiceError> {
        self.audited_series(principal, subject, "series_read").await
    }

    /// Everything kept about a subject (right of access): reports and stored images.
    pub async fn export(
        &self,
        principal: &Principal,
        subject: &str,
    ) -> Result<(Vec<StoredReport>, Vec<(StoredImage, Vec<u8>)>), ServiceError> {
        let reports = self.audited_series(principal, subject, "subject_exported").await?;
        let mut images = Vec::new();
        for r in &reports {
            for image in reads::report_images(self.ctx.state.as_ref(), &r.id())? {
                let bytes = self.ctx.blobs.fetch(&image.digest).await?;
                images.push((image, bytes));
            }
        }
        Ok((reports, images))
    }

    /// Erases a subject on every node (GDPR art. 17): how many reports went, and the audit
    /// record that says so.
    pub async fn erase(&self, principal: &Principal, subject: &str) -> Result<Erased, ServiceError> {
        principal.require(Permission::SubjectsErase)?;
        self.ctx.replicator.linearize().await?;
        let keyer = self.ctx.keyer()?;
        let reports = reads::subject_reports(self.ctx.state.as_ref(), &keyer, &principal.org_id, subject)?.len();
        if reports == 0 {
            return Err(ServiceError::not_found(Entity::Subject));
        }
        self.ctx
            .commit(
                &principal.actor(),
                Command::EraseSubject { org_id: principal.org_id, subject: subject.to_string() },
            )
            .await?;
        metrics::counter!("dermagate_erasures_total").increment(1);
        let target = keyer.subject(&principal.org_id, subject);
        let audit_seq = reads::audit_trail(self.ctx.state.as_ref(), &principal.org_id)?
            .iter()
            .rev()
            .find(|r| r.event.action == "subject_erased" && r.event.target == target)
            .map_or(0, |r| r.seq);
        Ok(Erased { reports, audit_seq })
    }

    /// The keyed hash that stands for a subject (what logs may name instead of the subject).
    pub fn subject_ref(&self, principal: &Principal, subject: &str) -> Result<String, ServiceError> {
        Ok(self.ctx.keyer()?.subject(&principal.org_id, subject)[..16].to_string())
    }

    /// An erasure conflict, for callers that map it.
    pub fn is_erased_conflict(e: &ServiceError) -> bool {
        e.code == ErrorCode::Conflict && e.rejection == Some(Rejection::SubjectErased)
    }
}
