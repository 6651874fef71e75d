package onlinestore

import (
	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// Load caches r, the latest row of its key in v, unless the tier holds a
// newer one: materialization and warm start fill the tier this way.
func (s *Store) Load(v *definitions.FeatureView, r offline.LatestRow) error {
	_, k, err := encodeTuple(r.Keys)
	if err != nil {
		return err
	}
	s.tier.Put(v.Name, k, toTier(v, r))
	return nil
}

// Refresh replaces the cached row of r's key in v with r when the tier
// holds the key (a row or a "no row" mark) and r is newer; a key the tier
// does not hold is left to be read through, since r, the latest of some
// recently stored rows, need not be the key's latest row. It reports
// whether the tier changed.
func (s *Store) Refresh(v *definitions.FeatureView, r offline.LatestRow) (bool, error) {
	_, k, err := encodeTuple(r.Keys)
	if err != nil {
		return false, err
	}
	return s.tier.Refresh(v.Name, k, toTier(v, r)), nil
}
