// Package status is what `refresher status` shows and where it comes
// from.
//
// Replicas record each app's last upstream fetch in Redis (Writer, fed by
// tokencache's OnFetch hook; key config.LastFetchKey, a small JSON Record
// that expires after RecordTTL). The status command, a separate process,
// reads those records together with the lease holder and each app's
// stored token (Gather) and prints them as a table (Report.Write). Tokens
// appear only as fingerprints; a record's error text comes from the wechat
// and tokencache packages, which keep secrets out of their errors.
package status
