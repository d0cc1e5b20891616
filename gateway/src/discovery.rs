//! The Discovery answer, rendered once at start-up.

use crate::capi::{DiscoveredHandler, DiscoveryResponse, RequestHook, Status};
use crate::catalog::{HOOKS_API_VERSION, Hook, capi_knows};
use crate::config::GatewayConfig;

/// The Discovery answer for `config`: one handler per hook konnector serves that the configured CAPI release knows,
/// each with explicit `timeoutSeconds` and `failurePolicy`. Deterministic: same config, same bytes.
pub fn discovery(config: &GatewayConfig) -> DiscoveryResponse {
    DiscoveryResponse {
        api_version: HOOKS_API_VERSION.to_owned(),
        kind: "DiscoveryResponse".to_owned(),
        status: Status::Success,
        handlers: Hook::ALL
            .into_iter()
            .filter(|hook| capi_knows(hook.name(), config.capi_version))
            .map(|hook| {
                let policy = config.hooks.get(hook);
                DiscoveredHandler {
                    name: hook.handler_name().to_owned(),
                    request_hook: RequestHook {
                        api_version: HOOKS_API_VERSION.to_owned(),
                        hook: hook.name().to_owned(),
                    },
                    timeout_seconds: i32::try_from(policy.timeout_seconds).unwrap_or(30),
                    failure_policy: policy.failure_policy,
                }
            })
            .collect(),
    }
}
