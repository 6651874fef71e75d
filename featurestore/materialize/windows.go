package materialize

import (
	"context"
	"fmt"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// RefreshWindows recomputes every windowed view's aggregates as of now and
// replaces the rows of the keys the tier holds: window values change as
// time passes even without new events (events slide out of windows,
// days_since_last grows). Keys the tier does not hold are left to be read
// through. It returns how many rows it replaced.
func RefreshWindows(ctx context.Context, store *offline.Store, repo *definitions.Repo, tier Refresher) (int, error) {
	replaced := 0
	now := time.Now()
	for i := range repo.FeatureViews {
		v := &repo.FeatureViews[i]
		if !v.Windowed() {
			continue
		}
		_, err := store.ScanLatest(ctx, repo, v, offline.ScanOptions{At: now}, func(r offline.LatestRow) error {
			ok, err := tier.Refresh(v, r)
			if ok {
				replaced++
			}
			return err
		})
		if err != nil {
			return replaced, fmt.Errorf("refresh windowed view %s: %w", v.Name, err)
		}
	}
	return replaced, nil
}
