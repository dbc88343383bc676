"""How big one call between deployments may be: every deployment's runtime_env raises gRPC's 4 MiB message limit.

Ray Serve's handle calls travel over gRPC, whose limit (RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH, 4 MiB by
default) applies where a replica receives a call and where a caller receives its answer. The API's own limits allow
far larger calls: an image body of up to limits.max_image_body_bytes (20 MiB), and a grouped FAQ call of up to
faq_call_grouping.max_group_size requests of limits.max_json_body_bytes each (64 x 2 MiB). Over gRPC's limit a call
failed with a 500, and every request grouped into it with it (a hostile client found it). Raised in the runtime_env
of every deployment, so callers and callees agree wherever they run (`serve run`, the RayService).
"""

MAX_CALL_BYTES = 256 * 1024 * 1024  # above 64 x 2 MiB of grouped FAQ requests and a 20 MiB image body
CALL_SIZE_ENV = {"RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(MAX_CALL_BYTES)}
RUNTIME_ENV = {"env_vars": CALL_SIZE_ENV}
