package redisblock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// checkpointPart is the largest value one checkpoint part takes: a Redis
// command that moves a few hundred kilobytes holds the server up for well
// under a millisecond, so gateways and blocks never wait behind a save.
const checkpointPart = 512 << 10

// checkpointMax bounds what LoadCheckpoint reads (a head that says more is
// refused).
const checkpointMax = 1 << 30

// SaveCheckpoint stores data as the daemon's checkpoint, kept for ttl: its
// parts first, then the head naming them, then the previous generation's
// parts are deleted. A save that fails half-way leaves the previous
// checkpoint whole.
func (s *Store) SaveCheckpoint(ctx context.Context, data []byte, ttl time.Duration) error {
	old, _ := s.checkpointHead(ctx)
	gen := strconv.FormatInt(s.opts.Now().UnixNano(), 10)
	parts := (len(data) + checkpointPart - 1) / checkpointPart
	pipe := s.rdb.Pipeline()
	for i := range parts {
		part := data[i*checkpointPart : min(len(data), (i+1)*checkpointPart)]
		pipe.Set(ctx, s.partKey(gen, i), part, ttl)
		if pipe.Len() >= 16 { // a few megabytes in flight at most
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("save checkpoint: %w", err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	head := fmt.Sprintf("%s %d %d", gen, parts, len(data))
	if err := s.rdb.Set(ctx, s.keys.Checkpoint, head, ttl).Err(); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if old.gen != "" && old.gen != gen {
		for i := range old.parts {
			pipe.Del(ctx, s.partKey(old.gen, i))
		}
		pipe.Exec(ctx) // what is left expires with its TTL
	}
	return nil
}

// LoadCheckpoint returns the daemon's checkpoint, nil when there is none.
func (s *Store) LoadCheckpoint(ctx context.Context) ([]byte, error) {
	head, err := s.checkpointHead(ctx)
	if err != nil || head.gen == "" {
		return nil, err
	}
	data := make([]byte, 0, head.size)
	for i := range head.parts {
		part, err := s.rdb.Get(ctx, s.partKey(head.gen, i)).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("load checkpoint: part %d of %d is gone (a save replaced it meanwhile, or it expired)", i+1, head.parts)
		}
		if err != nil {
			return nil, fmt.Errorf("load checkpoint: %w", err)
		}
		if len(data)+len(part) > head.size {
			return nil, fmt.Errorf("load checkpoint: parts longer than the %d bytes the head says", head.size)
		}
		data = append(data, part...)
	}
	if len(data) != head.size {
		return nil, fmt.Errorf("load checkpoint: %d bytes, the head says %d", len(data), head.size)
	}
	return data, nil
}

type checkpointHead struct {
	gen         string
	parts, size int
}

func (s *Store) checkpointHead(ctx context.Context) (checkpointHead, error) {
	v, err := s.rdb.Get(ctx, s.keys.Checkpoint).Result()
	if errors.Is(err, redis.Nil) {
		return checkpointHead{}, nil
	}
	if err != nil {
		return checkpointHead{}, fmt.Errorf("load checkpoint: %w", err)
	}
	f := strings.Fields(v)
	var h checkpointHead
	if len(f) == 3 {
		h.gen = f[0]
		h.parts, _ = strconv.Atoi(f[1])
		h.size, _ = strconv.Atoi(f[2])
	}
	if _, err := strconv.ParseInt(h.gen, 10, 64); err != nil || h.size < 0 || h.size > checkpointMax ||
		h.parts != (h.size+checkpointPart-1)/checkpointPart {
		return checkpointHead{}, fmt.Errorf("load checkpoint: %s holds %q, not a checkpoint head", s.keys.Checkpoint, v)
	}
	return h, nil
}

func (s *Store) partKey(gen string, i int) string {
	return s.keys.Checkpoint + ":" + gen + ":" + strconv.Itoa(i)
}
