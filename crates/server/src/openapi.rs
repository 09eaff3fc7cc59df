//! The OpenAPI 3.1 description of keygate's JSON endpoints, generated from the handlers and the
//! types they answer with (utoipa), so it cannot drift from the code: the protocol (getToken,
//! `/auth/verify`), health, and the admin API. Served at `/openapi.json`; `keygate openapi`
//! prints it. The console (HTML) and `/metrics` (Prometheus text) are not in it.

use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes::{admin, audit, credits, health, keys, protocol, usage};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate",
        description = "Authentication for HTTP APIs in the Akool OpenAPI protocol: `x-api-key`, \
            `POST /api/open/v3/getToken`, `Authorization: Bearer`. Every answer is the envelope \
            `{\"code\", \"msg\", \"data\"?}`; `code` is the business code (1000 success, 1003 \
            parameter error, 1005 rate limited, 1101 invalid or expired, 1102 empty, 1109 no such account, \
            1200 banned, 1503 store unavailable, ...) and what clients should read.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        protocol::get_token,
        protocol::verify,
        protocol::verify_rest,
        health::healthz,
        health::readyz,
        admin::create_account,
        admin::list_accounts,
        admin::get_account,
        admin::patch_account,
        admin::ban,
        admin::unban,
        admin::create_credential,
        admin::list_credentials,
        admin::get_credential,
        admin::patch_credential,
        admin::revoke,
        admin::rotate,
        usage::credential_usage,
        usage::account_usage,
        credits::adjust_credential,
        credits::credential_balance,
        credits::adjust_account,
        credits::account_balance,
        admin::list_plans,
        admin::put_plan,
        admin::get_plan,
        admin::delete_plan,
        keys::list_roles,
        keys::put_role,
        keys::get_role,
        keys::delete_role,
        admin::signing_keys,
        admin::rotate_signing_key,
        admin::retire_signing_key,
        audit::list_audit,
    ),
    modifiers(&SecuritySchemes, &Links),
    tags(
        (name = "protocol", description = "The vendor's protocol: what API clients call"),
        (name = "health", description = "For orchestrators and load balancers"),
        (name = "admin", description = "The admin API, `Authorization: Bearer <admin token>`"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        let header =
            |name: &str, what: &str| SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(name, what)));
        c.add_security_scheme("apiKey", header("x-api-key", "The API key (kgk_...), the vendor's recommended method"));
        c.add_security_scheme(
            "bearerToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A token from getToken (or the API key itself)"))
                    .build(),
            ),
        );
        c.add_security_scheme("clientId", header("x-client-id", "The legacy pair: the clientId..."));
        c.add_security_scheme("clientSecret", header("x-client-secret", "...and its API key"));
        c.add_security_scheme(
            "adminToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token (kga_...): generated at first start, or `admin_token`"))
                    .build(),
            ),
        );
    }
}

/// OpenAPI links from what a call creates to the calls on it (an account -> its credentials,
/// ban, unban, usage; a credential -> get, revoke, rotate, usage), so that clients and stateful tests
/// can follow them.
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::link::LinkBuilder;
        let account_ops = [
            "get_account",
            "ban",
            "unban",
            "create_credential",
            "list_credentials",
            "account_usage",
            "adjust_account",
            "account_balance",
        ];
        let credential_ops = [
            "get_credential",
            "patch_credential",
            "revoke",
            "rotate",
            "usage",
            "adjust_credential",
            "credential_balance",
        ];
        let from = [
            ("/admin/v1/accounts", "201", &account_ops[..], "id", "$response.body#/data/id"),
            (
                "/admin/v1/accounts/{id}/credentials",
                "201",
                &credential_ops[..],
                "client_id",
                "$response.body#/data/clientId",
            ),
            (
                "/admin/v1/credentials/{client_id}/rotate",
                "200",
                &credential_ops[..],
                "client_id",
                "$response.body#/data/clientId",
            ),
        ];
        for (path, status, targets, param, value) in from {
            let Some(op) = openapi.paths.paths.get_mut(path).and_then(|item| item.post.as_mut()) else { continue };
            let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) else { continue };
            for target in targets {
                let link = LinkBuilder::new().operation_id(*target).parameter(param, value).build();
                response.links.insert((*target).to_owned(), RefOr::T(link));
            }
        }
    }
}

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serialises")
}

/// `GET /openapi.json`.
pub async fn handler() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(document).clone();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_openapi_3_1_with_every_endpoint() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        if let Ok(path) = std::env::var("KEYGATE_OPENAPI_OUT") {
            std::fs::write(path, super::document()).unwrap();
        }
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 25, "{:?}", paths.keys().collect::<Vec<_>>());
        // The grace pattern in the document is the one the server parses by.
        let grace = &doc["components"]["schemas"]["RotateRequest"]["properties"]["grace"]["pattern"];
        assert_eq!(grace, keygate_ops::GRACE_PATTERN);
        // So are the usage query's time patterns.
        for p in ["/admin/v1/credentials/{client_id}/usage", "/admin/v1/accounts/{id}/usage"] {
            let params = doc["paths"][p]["get"]["parameters"].as_array().unwrap();
            for name in ["from", "to"] {
                let param = params.iter().find(|q| q["name"] == name).unwrap_or_else(|| panic!("{p}: no {name}"));
                assert_eq!(param["schema"]["pattern"], keygate_ops::usage::TIME_PATTERN, "{p} {name}");
            }
            let ok = &doc["paths"][p]["get"]["responses"]["200"]["content"];
            assert!(ok.get("text/csv").is_some() && ok.get("application/json").is_some(), "{p}: {ok}");
        }
        let links = &doc["paths"]["/admin/v1/accounts/{id}/credentials"]["post"]["responses"]["201"]["links"];
        assert_eq!(links["revoke"]["parameters"]["client_id"], "$response.body#/data/clientId", "{links}");
        // Every operation names its answers, and every error answer is the envelope.
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
                assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success");
            }
        }
    }
}
