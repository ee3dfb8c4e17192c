//! The `trail.v1.Admin` service: operations an operator starts by hand.
//! `Snapshot` asks a log's state driver for a snapshot at its next
//! consistent point and answers once the file is durable. `ArchiveNow`,
//! `ArchiveStatus` and `ArchiveHold` (S3 legal holds on archived objects,
//! with the server's archive credentials: DECISIONS.md #39) hand over to
//! the compactor (`crate::compactor`).

use tonic::{Request, Response, Status};
use trail_archive::{ArchiveError, ArchiveStatus, LockFailure, LockProbe};
use trail_log::{LogName, Lsn};
use trail_proto::v1::admin_server::Admin;
use trail_proto::v1::{
    ArchiveHoldRequest, ArchiveHoldResponse, ArchiveNowRequest, ArchiveStatusRequest,
    ArchiveStatusResponse, LockProbe as ProtoLockProbe, SnapshotRequest, SnapshotResponse,
};

use trail_archive::check::error_chain;

use crate::compactor::Compactor;

use super::query::index_status;
use super::LogService;

/// The Admin service, over the same logs as the [`LogService`] it wraps.
#[derive(Clone)]
pub struct AdminService {
    logs: LogService,
    /// The compactor, when archiving is on.
    compactor: Option<Compactor>,
}

impl AdminService {
    /// Admin operations on `logs`' logs.
    #[must_use]
    pub fn new(logs: LogService) -> AdminService {
        AdminService {
            logs,
            compactor: None,
        }
    }

    /// With the compactor `ArchiveNow` and `ArchiveStatus` talk to.
    #[must_use]
    pub fn with_compactor(mut self, compactor: Option<Compactor>) -> AdminService {
        self.compactor = compactor;
        self
    }

    fn compactor(&self) -> Result<&Compactor, Status> {
        self.compactor.as_ref().ok_or_else(|| {
            Status::failed_precondition("archiving is off: set [archive] url in the configuration")
        })
    }
}

fn log_name(log: &str) -> Result<LogName, Status> {
    LogName::new(log).map_err(|error| Status::invalid_argument(error.to_string()))
}

/// Every variant mapped, no catch-all: a new kind of archive failure must
/// be given its status here. `Read` and `Subscribe` of archived records
/// answer through it too.
pub(super) fn archive_status_error(error: &ArchiveError) -> Status {
    let message = error_chain(error);
    match error {
        ArchiveError::Store { .. } => Status::unavailable(message),
        ArchiveError::DataLoss { .. } | ArchiveError::Segment { .. } => Status::data_loss(message),
        ArchiveError::Conflict { .. } | ArchiveError::Config(_) => {
            Status::failed_precondition(message)
        }
        ArchiveError::Local { .. } => Status::internal(message),
        ArchiveError::Log(log_error) => crate::status::from_log_error(log_error),
        ArchiveError::Lock { failure, .. } => match failure {
            LockFailure::Unreachable(_) => Status::unavailable(message),
            LockFailure::NotEnabled(_)
            | LockFailure::Unsupported(_)
            | LockFailure::Refused { .. }
            | LockFailure::NotApplied(_)
            | LockFailure::NotS3 => Status::failed_precondition(message),
        },
    }
}

fn proto_probe(probe: &LockProbe) -> ProtoLockProbe {
    match probe {
        LockProbe::Off => ProtoLockProbe::Off,
        LockProbe::Pending => ProtoLockProbe::Pending,
        LockProbe::Enforced => ProtoLockProbe::Enforced,
        LockProbe::NotEnforced(_) => ProtoLockProbe::NotEnforced,
        LockProbe::NotEnabled(_) => ProtoLockProbe::NotEnabled,
        LockProbe::Unsupported(_) => ProtoLockProbe::Unsupported,
        LockProbe::Failed(_) => ProtoLockProbe::Failed,
    }
}

fn status_response(status: ArchiveStatus, uploaded_now: u64) -> ArchiveStatusResponse {
    let ArchiveStatus {
        target,
        archived_segments,
        archived_through,
        archived_bytes,
        local_segments,
        local_and_archived,
        local_bytes,
        first_local_lsn,
        uploads,
        last_upload_unix_nanos,
        failures,
        last_error,
        lock,
        lock_probe,
        objects_locked,
    } = status;
    ArchiveStatusResponse {
        target,
        archived_segments,
        archived_through_lsn: archived_through.0,
        archived_bytes,
        local_segments,
        local_and_archived,
        local_bytes,
        first_local_lsn: first_local_lsn.0,
        uploads,
        last_upload_unix_nanos,
        failures,
        last_error: last_error.unwrap_or_default(),
        uploaded_now,
        lock_mode: lock
            .map(|policy| policy.mode.as_config().to_owned())
            .unwrap_or_default(),
        lock_retention_secs: lock.map_or(0, |policy| policy.retention.as_secs()),
        lock_probe: proto_probe(&lock_probe).into(),
        lock_probe_detail: lock_probe.detail().to_owned(),
        objects_locked,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let SnapshotRequest { log } = request.into_inner();
        let open = self.logs.existing_open_log(&log).await?;
        let derived = open.derived.running()?;
        let answer = derived.snapshot().map_err(|error| index_status(&error))?;
        let info = answer
            .await
            .map_err(|_| Status::unavailable("the state driver stopped before the snapshot"))?
            .map_err(|error| index_status(&error))?;
        Ok(Response::new(SnapshotResponse {
            lsn: info.watermark.lsn,
            hash: info.watermark.hash.to_vec(),
            file: info
                .path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes: info.bytes,
        }))
    }

    async fn archive_now(
        &self,
        request: Request<ArchiveNowRequest>,
    ) -> Result<Response<ArchiveStatusResponse>, Status> {
        let ArchiveNowRequest { log } = request.into_inner();
        let name = log_name(&log)?;
        let compactor = self.compactor()?;
        match compactor.archive_now(&name).await {
            Ok(Some((status, uploaded))) => Ok(Response::new(status_response(status, uploaded))),
            Ok(None) => Err(crate::status::log_not_found(&name)),
            Err(error) => Err(archive_status_error(&error)),
        }
    }

    async fn archive_status(
        &self,
        request: Request<ArchiveStatusRequest>,
    ) -> Result<Response<ArchiveStatusResponse>, Status> {
        let ArchiveStatusRequest { log } = request.into_inner();
        let name = log_name(&log)?;
        let status = self
            .compactor()?
            .status(&name)
            .await
            .ok_or_else(|| crate::status::log_not_found(&name))?;
        Ok(Response::new(status_response(status, 0)))
    }

    async fn archive_hold(
        &self,
        request: Request<ArchiveHoldRequest>,
    ) -> Result<Response<ArchiveHoldResponse>, Status> {
        let ArchiveHoldRequest {
            log,
            on,
            from_lsn,
            to_lsn,
        } = request.into_inner();
        let name = log_name(&log)?;
        let to = if to_lsn == 0 { u64::MAX } else { to_lsn };
        if from_lsn > to {
            return Err(Status::invalid_argument(format!(
                "from_lsn {from_lsn} is after to_lsn {to_lsn}"
            )));
        }
        let compactor = self.compactor()?;
        match compactor.hold(&name, Lsn(from_lsn), Lsn(to), on).await {
            Ok(Some(done)) => Ok(Response::new(ArchiveHoldResponse {
                segments: done.segments,
                objects: done.objects,
                first_lsn: done.first_lsn.0,
                last_lsn: done.last_lsn.0,
                archived_through_lsn: done.archived_through.0,
                on,
            })),
            Ok(None) => Err(crate::status::log_not_found(&name)),
            Err(error) => Err(archive_status_error(&error)),
        }
    }
}
