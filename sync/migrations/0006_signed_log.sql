-- kdelta store schema v6: the signed, hash-chained change log. See sync/src/seal.rs and
-- sync/README.md, "Signed change log".
--
-- Per change (NULL on changes made before the upgrade: the unsigned past, `signed = false`):
--   prev_hash  change hash of the same actor's previous change (32 zero bytes: chain start)
--   body_hash  BLAKE3 of the body (readings: of the set of per-series unit hashes), kept so
--              a change whose readings retention pruned still proves its link and signature
--   signature  Ed25519 over BLAKE3(actor, seq, HLC, prev_hash, body_hash)
--   pruned     unit hashes (32 bytes each, concatenated) of the series retention removed
ALTER TABLE changes ADD COLUMN prev_hash BLOB;
ALTER TABLE changes ADD COLUMN body_hash BLOB;
ALTER TABLE changes ADD COLUMN signature BLOB;
ALTER TABLE changes ADD COLUMN pruned BLOB;

-- The Ed25519 public key each actor signs with: bound on its first signed change this store
-- stores (trust on first use); a later change of that actor signed by another key is refused.
ALTER TABLE actors ADD COLUMN public_key BLOB;
