package cluster

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/rueidis"
)

// keepSubscribed holds one subscription to ch until ctx ends, resubscribing
// with backoff when the link drops (or, for sharded channels, a slot
// migration unsubscribes it). sharded selects SSUBSCRIBE over SUBSCRIBE.
// onMsg and onSub run on rueidis' pipeline goroutine and must not block;
// onSub runs on every (re)subscription confirmation.
func keepSubscribed(ctx context.Context, c rueidis.Client, sharded bool, ch string, onMsg func(string), onSub func(), log *slog.Logger) {
	kind := "subscribe"
	cmd := c.B().Subscribe().Channel(ch).Build()
	if sharded {
		kind = "ssubscribe"
		cmd = c.B().Ssubscribe().Channel(ch).Build()
	}
	hctx := rueidis.WithOnSubscriptionHook(ctx, func(s rueidis.PubSubSubscription) {
		if s.Kind == kind && s.Channel == ch {
			onSub()
		}
	})
	backoff := 50 * time.Millisecond
	for {
		err := c.Receive(hctx, cmd, func(m rueidis.PubSubMessage) { onMsg(m.Message) })
		if ctx.Err() != nil || errors.Is(err, rueidis.ErrClosing) {
			return
		}
		if err != nil {
			log.Warn("subscription lost; resubscribing", "channel", ch, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}
