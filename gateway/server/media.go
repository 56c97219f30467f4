package server

import (
	"context"
	"time"
)

// mediaSweepEvery is how often expired uploads are deleted; they are unreadable from the moment
// they expire, so the sweep only reclaims space.
const mediaSweepEvery = time.Hour

// sweepMedia deletes expired uploaded files, in bounded batches, until ctx ends.
func (s *Server) sweepMedia(ctx context.Context) error {
	t := time.NewTicker(mediaSweepEvery)
	defer t.Stop()
	for {
		for {
			n, err := s.db.DeleteExpiredMedia(ctx, time.Now(), 500)
			if err != nil {
				s.log.Warn().Err(err).Msg("deleting expired media files failed; trying again at the next sweep")
				break
			}
			if n > 0 {
				s.log.Info().Int("files", n).Msg("expired media files deleted")
			}
			if n < 500 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
