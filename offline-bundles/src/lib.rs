//! outpost-bundles: signed offline update bundles.
