//! What a key may do and when: a credential's name, metadata, expiry, enabled, permissions,
//! roles and IP allowlist, set at creation or changed later ([`CredentialFields`]); roles, the
//! named sets of permissions credentials hold (`/admin/v1/roles`); an account's IP allowlist.
//!
//! The server checks every field and refuses a bad one with `1003` (HTTP 400), writing nothing
//! of the request. A request that a key's permissions or allowlist do not allow is refused with
//! `1009` (HTTP 403): an [`Error::PermissionDenied`](crate::Error::PermissionDenied).

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{AccountDetail, AdminClient, CredentialDetail, IssuedCredential, RateLimit, body};
use crate::error::{Error, Result};
use crate::http;

/// Unix milliseconds of `t` (negative before 1970), the form of `expiresAt`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// assert_eq!(keygate_client::unix_ms(UNIX_EPOCH + Duration::from_millis(1_500)), 1_500);
/// assert_eq!(keygate_client::unix_ms(UNIX_EPOCH - Duration::from_secs(1)), -1_000);
/// ```
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// What a credential may do and when: the body of [`AdminClient::create_credential_with`] (set
/// in the same transaction as the credential) and of [`AdminClient::update_credential`] (a
/// field left unset stays as it is; `clear_...` removes it).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use keygate_client::CredentialFields;
///
/// let fields = CredentialFields::new()
///     .name("dashboard (read-only)")
///     .meta(serde_json::json!({"team": "web"}))
///     .expires_at(UNIX_EPOCH + Duration::from_secs(4_102_444_800))
///     .permissions(["videos.read", "images.*"])
///     .roles(["reader"])
///     .ip_allowlist(["10.0.0.0/8", "2001:db8::/32"]);
/// assert_eq!(
///     serde_json::to_value(&fields)?,
///     serde_json::json!({"name": "dashboard (read-only)", "meta": {"team": "web"}, "expiresAt": 4_102_444_800_000i64,
///         "permissions": ["videos.read", "images.*"], "roles": ["reader"],
///         "ipAllowlist": ["10.0.0.0/8", "2001:db8::/32"]})
/// );
///
/// // A change: only what it names. Clearing sends null; an empty list removes them all.
/// let change = CredentialFields::new().clear_name().never_expires().enabled(false).roles(Vec::<String>::new());
/// assert_eq!(
///     serde_json::to_value(&change)?,
///     serde_json::json!({"name": null, "expiresAt": null, "enabled": false, "roles": []})
/// );
/// assert!(CredentialFields::new().is_empty() && !change.is_empty());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Option<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permissions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_allowlist: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratelimits: Option<Vec<RateLimit>>,
}

impl CredentialFields {
    /// No field: a plain credential, or a change of nothing.
    ///
    /// ```
    /// assert!(keygate_client::CredentialFields::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no field is set.
    ///
    /// ```
    /// assert!(!keygate_client::CredentialFields::new().enabled(true).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// A name for people, 1 to 200 characters (trimmed by the server); sent upstream as
    /// `x-keygate-key-name` and in `/auth/verify`'s answer ([`Identity::name`](crate::Identity::name)).
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().name("ci runner");
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"name":"ci runner"}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Some(name.into()));
        self
    }

    /// Removes the name (`"name": null`).
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().clear_name();
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"name":null}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn clear_name(mut self) -> Self {
        self.name = Some(None);
        self
    }

    /// Metadata: a JSON object of up to 4 KB (as compact JSON), replacing the old; sent upstream
    /// as `x-keygate-meta` and in `/auth/verify`'s answer. Anything but an object is refused
    /// before it is sent ([`Error::Invalid`]).
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().meta(serde_json::json!({"tier": "gold"}));
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"meta":{"tier":"gold"}}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn meta(mut self, meta: impl Into<serde_json::Value>) -> Self {
        self.meta = Some(Some(meta.into()));
        self
    }

    /// Removes the metadata (`"meta": null`).
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().clear_meta();
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"meta":null}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn clear_meta(mut self) -> Self {
        self.meta = Some(None);
        self
    }

    /// When the credential and its tokens stop working (then `1101`), as Unix milliseconds
    /// ([`unix_ms`]). A time already past makes it expired at once.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let in_30_days = SystemTime::now() + Duration::from_secs(30 * 86_400);
    /// let f = keygate_client::CredentialFields::new().expires_at(in_30_days);
    /// assert_eq!(f, keygate_client::CredentialFields::new().expires_at_ms(keygate_client::unix_ms(in_30_days)));
    /// ```
    pub fn expires_at(self, t: SystemTime) -> Self {
        self.expires_at_ms(unix_ms(t))
    }

    /// [`expires_at`](Self::expires_at) in Unix milliseconds (0 to 253402300799999).
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().expires_at_ms(4_102_444_800_000);
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"expiresAt":4102444800000}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn expires_at_ms(mut self, ms: i64) -> Self {
        self.expires_at = Some(Some(ms));
        self
    }

    /// Removes the expiry (`"expiresAt": null`): it works until revoked.
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().never_expires();
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"expiresAt":null}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn never_expires(mut self) -> Self {
        self.expires_at = Some(None);
        self
    }

    /// `false`: it and its tokens are refused (`1101` "disabled") until set back to `true`;
    /// unlike a revoke, reversible.
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().enabled(false);
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"enabled":false}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// Its own permissions, the whole set (empty: none): names (`videos.create`), `prefix.*` or
    /// `*`. With its roles', what it may do.
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().permissions(["videos.create", "images.*"]);
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"permissions":["videos.create","images.*"]}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn permissions<I: IntoIterator<Item: Into<String>>>(mut self, permissions: I) -> Self {
        self.permissions = Some(permissions.into_iter().map(Into::into).collect());
        self
    }

    /// The roles it holds, the whole set (empty: none); each must exist ([`AdminClient::put_role`]).
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().roles(["video-editor"]);
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"roles":["video-editor"]}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn roles<I: IntoIterator<Item: Into<String>>>(mut self, roles: I) -> Self {
        self.roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// The addresses or networks it may be used from (`203.0.113.7`, `10.0.0.0/8`,
    /// `2001:db8::/32`), the whole set (empty: anywhere); its account's allowlist applies as well
    /// ([`AdminClient::set_account_ip_allowlist`]). A request from elsewhere is `1009`.
    ///
    /// ```
    /// let f = keygate_client::CredentialFields::new().ip_allowlist(["203.0.113.7"]);
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"ipAllowlist":["203.0.113.7"]}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn ip_allowlist<I: IntoIterator<Item: Into<String>>>(mut self, networks: I) -> Self {
        self.ip_allowlist = Some(networks.into_iter().map(Into::into).collect());
        self
    }

    /// Its own rate limits, the whole set (as [`AdminClient::set_credential_ratelimits`]).
    ///
    /// ```
    /// use keygate_client::{CredentialFields, RateLimit};
    /// let f = CredentialFields::new().ratelimits([RateLimit::new("burst", 100, "1m")]);
    /// assert_eq!(serde_json::to_string(&f)?, r#"{"ratelimits":[{"name":"burst","limit":100,"duration":"1m"}]}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn ratelimits(mut self, ratelimits: impl IntoIterator<Item = RateLimit>) -> Self {
        self.ratelimits = Some(ratelimits.into_iter().collect());
        self
    }

    /// The request body, once what can be checked here is.
    fn body(&self) -> Result<serde_json::Value> {
        if let Some(Some(meta)) = &self.meta
            && !meta.is_object()
        {
            return Err(Error::Invalid(format!("meta must be a JSON object, not {meta}")));
        }
        body(self)
    }
}

/// A named set of permissions credentials hold ([`CredentialFields::roles`]). A change applies
/// to every credential holding it, and to their tokens, within the change-feed bound. Times are
/// Unix milliseconds.
///
/// ```
/// let r: keygate_client::Role = serde_json::from_str(
///     r#"{"name":"video-editor","permissions":["videos.*"],"createdAt":1,"updatedAt":2}"#,
/// )?;
/// assert_eq!((r.name.as_str(), r.permissions.as_slice()), ("video-editor", &["videos.*".to_owned()][..]));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Role {
    /// `[a-z0-9][a-z0-9_.-]{0,63}`.
    pub name: String,
    /// What it grants: names (`videos.create`), `prefix.*` or `*`.
    pub permissions: Vec<String>,
    /// When it was created.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// A role and how many credentials hold it: the answer of [`AdminClient::role`].
///
/// ```
/// let d: keygate_client::RoleDetail = serde_json::from_str(
///     r#"{"name":"reader","permissions":["images.read"],"createdAt":1,"updatedAt":1,"credentials":3}"#,
/// )?;
/// assert_eq!((d.role.name.as_str(), d.credentials), ("reader", 3));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RoleDetail {
    /// The role.
    #[serde(flatten)]
    pub role: Role,
    /// Credentials holding it (a held role cannot be deleted).
    pub credentials: u64,
}

#[derive(Serialize)]
struct RoleBody<'a> {
    permissions: &'a [&'a str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AllowlistBody<'a> {
    ip_allowlist: &'a [&'a str],
}

impl AdminClient {
    /// `POST /accounts/{id}/credentials` with its fields: a new credential whose name,
    /// metadata, expiry, enabled, permissions, roles, allowlist and rate limits are set in the
    /// same transaction (the key never exists without them), with its API key (shown this once).
    /// A bad field or an unknown role is `1003` (HTTP 400) and creates nothing; an unknown
    /// account is `1109` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use std::time::{Duration, SystemTime};
    /// use keygate_client::CredentialFields;
    ///
    /// let fields = CredentialFields::new()
    ///     .name("video pipeline")
    ///     .permissions(["videos.create"])
    ///     .expires_at(SystemTime::now() + Duration::from_secs(90 * 86_400));
    /// let issued = admin.create_credential_with("64db241f6d9e5c4bd136c187", &fields).await?;
    /// println!("clientId {}, apiKey {}", issued.client_id, issued.api_key.expose());
    /// # Ok(()) }
    /// ```
    pub async fn create_credential_with(
        &self,
        account_id: &str,
        fields: &CredentialFields,
    ) -> Result<IssuedCredential> {
        self.post(&["accounts", account_id, "credentials"], Some(fields.body()?), false).await
    }

    /// `PATCH /credentials/{clientId}` with the fields to change (the others stay): one
    /// transaction, applied by every node, and to its live tokens, within the change-feed bound.
    /// A bad field or an unknown role is `1003` (HTTP 400) and changes nothing; an unknown
    /// clientId is `1003` (HTTP 404). Safe to repeat, so retried as reads are.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::CredentialFields;
    /// // Suspend a key, then let it work again.
    /// admin.update_credential("64db241f6d9e5c4bd136c188", &CredentialFields::new().enabled(false)).await?;
    /// let c = admin.update_credential("64db241f6d9e5c4bd136c188", &CredentialFields::new().enabled(true)).await?;
    /// assert!(c.credential.enabled);
    /// # Ok(()) }
    /// ```
    pub async fn update_credential(&self, client_id: &str, fields: &CredentialFields) -> Result<CredentialDetail> {
        self.patch(&["credentials", client_id], fields.body()?).await
    }

    /// `PUT /roles/{name}` `{"permissions"}`: creates the role or replaces its permissions (the
    /// whole set), and whether it was created (HTTP 201) rather than replaced (200). Every
    /// credential holding it has the new permissions within the change-feed bound. A bad name or
    /// permission is `1003` (HTTP 400). Safe to repeat, so retried as reads are.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let (role, created) = admin.put_role("video-editor", &["videos.*", "images.read"]).await?;
    /// println!("{} {}", role.name, if created { "created" } else { "replaced" });
    /// # Ok(()) }
    /// ```
    pub async fn put_role(&self, name: &str, permissions: &[&str]) -> Result<(Role, bool)> {
        let url = self.url(&["roles", name], &[])?;
        let (status, bytes) = self.send(Method::PUT, url, Some(body(&RoleBody { permissions })?), true).await?;
        let (role, _) = http::decode_data(status, &bytes)?;
        Ok((role, status == 201))
    }

    /// `GET /roles`: every role, by name.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// for r in admin.roles().await? {
    ///     println!("{}: {}", r.name, r.permissions.join(", "));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn roles(&self) -> Result<Vec<Role>> {
        Ok(self.get(&["roles"], &[]).await?.0)
    }

    /// `GET /roles/{name}`: a role and how many credentials hold it. An unknown role is `1003`
    /// (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let r = admin.role("video-editor").await?;
    /// println!("{} credentials hold {}", r.credentials, r.role.name);
    /// # Ok(()) }
    /// ```
    pub async fn role(&self, name: &str) -> Result<RoleDetail> {
        Ok(self.get(&["roles", name], &[]).await?.0)
    }

    /// `DELETE /roles/{name}`. Refused with `1003` (HTTP 409) while credentials hold it (take it
    /// from them first, with [`update_credential`](Self::update_credential)); an unknown role is
    /// `1003` (HTTP 404), which a retry after a lost answer can also give for a role this call
    /// deleted.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::{Code, Error};
    /// match admin.delete_role("legacy").await {
    ///     Ok(()) => println!("deleted"),
    ///     Err(Error::Api { code: Code::ParamError, status: 409, .. }) => println!("credentials still hold it"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn delete_role(&self, name: &str) -> Result<()> {
        self.send(Method::DELETE, self.url(&["roles", name], &[])?, None, true).await?;
        Ok(())
    }

    /// `PATCH /accounts/{id}` `{"ipAllowlist"}`: the addresses or networks the account's
    /// credentials may be used from, the whole set (`&[]`: anywhere); each credential's own
    /// allowlist applies as well. A request from elsewhere is `1009`
    /// ([`Error::PermissionDenied`]). A malformed network is `1003` (HTTP 400), an unknown account
    /// `1109` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let a = admin.set_account_ip_allowlist("64db241f6d9e5c4bd136c187", &["203.0.113.0/24"]).await?;
    /// assert_eq!(a.account.ip_allowlist, ["203.0.113.0/24"]);
    /// admin.set_account_ip_allowlist("64db241f6d9e5c4bd136c187", &[]).await?; // anywhere again
    /// # Ok(()) }
    /// ```
    pub async fn set_account_ip_allowlist(&self, account_id: &str, networks: &[&str]) -> Result<AccountDetail> {
        self.patch(&["accounts", account_id], body(&AllowlistBody { ip_allowlist: networks })?).await
    }
}
