//! outpost-discovery: finding Outpost nodes by mDNS and static peer lists.
