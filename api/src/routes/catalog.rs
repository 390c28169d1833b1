//! What the device accepts and runs, published so integrators never guess: the body sites, the
//! models (with intended use and labels), and the Open Inference Protocol v2 read endpoints that
//! serving tools (KServe, Triton clients) expect.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(models))
        .routes(routes!(body_sites))
        .routes(routes!(oip_live))
        .routes(routes!(oip_ready))
        .routes(routes!(oip_model))
        .routes(routes!(oip_model_ready))
}

/// The code system of every class the device reports.
pub const ICD11_MMS: &str = "http://id.who.int/icd/release/11/mms";

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct BodySite {
    /// Stable code to send as `bodySite`.
    pub code: &'static str,
    pub display: &'static str,
}

const fn site(code: &'static str, display: &'static str) -> BodySite {
    BodySite { code, display }
}

/// The accepted body sites. **Codes are a contract: never renamed, only added.**
pub const BODY_SITES: &[BodySite] = &[
    site("HEAD", "Head"),
    site("SCALP", "Scalp"),
    site("FACE", "Face"),
    site("EAR_LEFT", "Left ear"),
    site("EAR_RIGHT", "Right ear"),
    site("NECK", "Neck"),
    site("CHEST", "Chest"),
    site("ABDOMEN", "Abdomen"),
    site("BACK_UPPER", "Upper back"),
    site("BACK_LOWER", "Lower back"),
    site("SHOULDER_LEFT", "Left shoulder"),
    site("SHOULDER_RIGHT", "Right shoulder"),
    site("ARM_LEFT", "Left arm"),
    site("ARM_RIGHT", "Right arm"),
    site("FOREARM_LEFT", "Left forearm"),
    site("FOREARM_RIGHT", "Right forearm"),
    site("HAND_LEFT", "Left hand"),
    site("HAND_RIGHT", "Right hand"),
    site("PALM_LEFT", "Left palm"),
    site("PALM_RIGHT", "Right palm"),
    site("FINGER_LEFT", "Finger of the left hand"),
    site("FINGER_RIGHT", "Finger of the right hand"),
    site("NAIL_FINGER", "Fingernail"),
    site("GLUTEAL", "Buttocks"),
    site("GENITAL", "Genital area"),
    site("GROIN", "Groin"),
    site("THIGH_LEFT", "Left thigh"),
    site("THIGH_RIGHT", "Right thigh"),
    site("LEG_LEFT", "Left lower leg"),
    site("LEG_RIGHT", "Right lower leg"),
    site("KNEE_LEFT", "Left knee"),
    site("KNEE_RIGHT", "Right knee"),
    site("FOOT_LEFT", "Left foot"),
    site("FOOT_RIGHT", "Right foot"),
    site("SOLE_LEFT", "Sole of the left foot"),
    site("SOLE_RIGHT", "Sole of the right foot"),
    site("TOE_LEFT", "Toe of the left foot"),
    site("TOE_RIGHT", "Toe of the right foot"),
    site("NAIL_TOE", "Toenail"),
    site("MUCOSA_ORAL", "Oral mucosa"),
    site("OTHER", "Other"),
];

pub fn body_site(code: &str) -> Option<&'static BodySite> {
    BODY_SITES.iter().find(|s| s.code == code)
}

/// The accepted body sites (send the code as `bodySite`).
#[utoipa::path(get, path = "/v1/body-sites", operation_id = "bodySites", tag = "catalog",
    responses((status = 200, description = "Every accepted body site", body = Vec<BodySite>)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn body_sites(_caller: Caller) -> axum::Json<&'static [BodySite]> {
    axum::Json(BODY_SITES)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelView {
    pub name: String,
    pub version: String,
    /// True for the repository's demonstration model: not for clinical use.
    pub demonstration: bool,
    pub intended_use: String,
    pub input: ModelInputView,
    pub min_resolution: ResolutionView,
    pub labels: Vec<LabelView>,
    /// The versioned thresholds of the quality gate that runs before this model.
    #[schema(value_type = Object)]
    pub quality_thresholds: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInputView {
    pub width: usize,
    pub height: usize,
    pub color: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResolutionView {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelView {
    pub code: String,
    pub display: String,
    pub system: &'static str,
    pub malignant: bool,
    pub urgent_referral: bool,
}

pub fn model_view(state: &AppState) -> ModelView {
    let m = &state.engine.model().manifest;
    let s = state.engine.settings();
    ModelView {
        name: m.name.clone(),
        version: m.version.clone(),
        demonstration: m.demonstration,
        intended_use: m.intended_use.clone(),
        input: ModelInputView { width: m.input.width, height: m.input.height, color: m.input.color.clone() },
        min_resolution: ResolutionView { width: s.decode.min_width, height: s.decode.min_height },
        labels: m
            .labels
            .iter()
            .map(|l| LabelView {
                code: l.code.clone(),
                display: l.display.clone(),
                system: ICD11_MMS,
                malignant: l.malignant,
                urgent_referral: l.urgent_referral,
            })
            .collect(),
        quality_thresholds: serde_json::to_value(&s.quality).unwrap_or_default(),
    }
}

/// The model this device runs: intended use, input, labels and quality thresholds.
#[utoipa::path(get, path = "/v1/models", operation_id = "models", tag = "catalog",
    responses((status = 200, description = "The models", body = Vec<ModelView>)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn models(State(state): State<AppState>, _caller: Caller) -> axum::Json<Vec<ModelView>> {
    axum::Json(vec![model_view(&state)])
}

#[derive(Serialize, ToSchema)]
pub struct Live {
    pub live: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
}

/// OIP v2 liveness.
#[utoipa::path(get, path = "/v2/health/live", operation_id = "oipLive", tag = "open-inference-protocol",
    responses((status = 200, description = "Live", body = Live)))]
pub async fn oip_live() -> axum::Json<Live> {
    axum::Json(Live { live: true })
}

/// OIP v2 readiness: ready when the node can serve authenticated inference.
#[utoipa::path(get, path = "/v2/health/ready", operation_id = "oipReady", tag = "open-inference-protocol",
    responses((status = 200, description = "Ready", body = Ready), (status = 503, description = "Not ready", body = Ready)))]
pub async fn oip_ready(State(state): State<AppState>) -> impl IntoResponse {
    let ready = state.node.readiness().is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(Ready { ready }))
}

fn known_model<'a>(state: &'a AppState, name: &str) -> Result<&'a dermagate_inference::Manifest, ApiError> {
    let m = &state.engine.model().manifest;
    if m.name == name {
        Ok(m)
    } else {
        Err(ApiError::not_found("model"))
    }
}

#[derive(Serialize, ToSchema)]
pub struct TensorView {
    pub name: String,
    #[schema(example = "FP32")]
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct OipModel {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorView>,
    pub outputs: Vec<TensorView>,
}

/// OIP v2 model metadata: name, versions, platform and the tensor signature.
#[utoipa::path(get, path = "/v2/models/{name}", operation_id = "oipModel", tag = "open-inference-protocol",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, description = "The model's metadata", body = OipModel)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn oip_model(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<OipModel>, ApiError> {
    let m = known_model(&state, &name)?;
    let (c, h, w) = (m.input.channels as i64, m.input.height as i64, m.input.width as i64);
    Ok(axum::Json(OipModel {
        name: m.name.clone(),
        versions: vec![m.version.clone()],
        platform: "onnx_tract".into(),
        inputs: vec![TensorView { name: m.input.name.clone(), datatype: "FP32".into(), shape: vec![-1, c, h, w] }],
        outputs: vec![TensorView {
            name: m.output.name.clone(),
            datatype: "FP32".into(),
            shape: vec![-1, m.labels.len() as i64],
        }],
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ModelReady {
    pub name: String,
    pub ready: bool,
}

/// OIP v2 model readiness.
#[utoipa::path(get, path = "/v2/models/{name}/ready", operation_id = "oipModelReady", tag = "open-inference-protocol",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, description = "Ready", body = ModelReady)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn oip_model_ready(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<ModelReady>, ApiError> {
    known_model(&state, &name)?;
    Ok(axum::Json(ModelReady { name, ready: true }))
}
