package redisblock

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

//go:embed block.lua
var blockLua string

//go:embed unblock.lua
var unblockLua string

//go:embed savemessage.lua
var savemessageLua string

// blockScript writes blocks, each whole, so that ip_block, the tally, the
// index, the metadata, the offence record, the evidence record and the
// event never disagree. One call writes a run of blocks: a script call has a
// fixed cost that dominates a single block's. It is idempotent per request
// ID. A renewal (a block re-fired by a failure during a standing block) is
// written only while login_fail:<ip> exists: if an operator deleted both
// keys the IP has a clean slate and its code is 2. An incident is the span
// of one IP's standing block: its ID is the ID of the evidence record that
// opened it. The evidence record travels as one JSON field.
//
// Each write is also an entry of the changes stream (its event, bounded
// like the evidence stream), which gateways follow.
//
// KEYS: index, evidence, changes, then per block: ip_block, login_fail, meta, offences.
// ARGV: channel, now ms, evidence max length, offence memory ms, then per
// block: request ID, ttl ms, count, mode (b block, r renewal, m manual, s restore: not over a standing block),
// expires ms, ip, record, rule, severity, first seen, last seen, expires at,
// reason, offence number. The event is made here from the IP (which has
// no zone, so nothing to escape) and the expiry: every argument costs Redis
// a copy in and out of Lua.
// Returns code and incident per block: 0 written, 1 already written, 2 cleared.
var blockScript = redis.NewScript(blockLua)

// unblockScript deletes both runbook keys, the metadata and the index entry,
// records who did it and tells gateways, in one round trip.
//
// KEYS: ip_block, login_fail, index, meta, evidence, changes.
// ARGV: ip, channel, event, evidence max length, record (JSON).
var unblockScript = redis.NewScript(unblockLua)

// saveMessageScript records where an incident's page is, in the block's
// metadata hash (so it expires with the block), only while that hash still
// belongs to the incident.
//
// KEYS: meta. ARGV: incident, channel, ts.
var saveMessageScript = redis.NewScript(savemessageLua)

// linkScript writes an evidence record into the incident of the address's
// standing block, if it has one (a possible takeover from a blocked
// address belongs to that incident), and returns the incident ("" when
// none).
//
// KEYS: meta, evidence. ARGV: evidence max length, record (JSON).
var linkScript = redis.NewScript(`
local inc = redis.call('HGET', KEYS[1], 'incident') or ''
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'incident', inc, 'record', ARGV[2])
return inc`)
