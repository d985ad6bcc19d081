//! What a node measures and shows on `/metrics` (OpenMetrics text through `prometheus-client`).
