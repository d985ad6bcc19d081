//! The site's health rules: one definition each, from which the Prometheus alert rules, the
//! findings of `outpost doctor` and the console's overview alarms are all derived.
