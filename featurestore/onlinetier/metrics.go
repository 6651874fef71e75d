package onlinetier

import "github.com/prometheus/client_golang/prometheus"

// Register exports the tier's counters to reg: hits, misses, evictions,
// entries and bytes held.
func (t *Tier) Register(reg prometheus.Registerer) error {
	collectors := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tailor_online_tier_hits_total", Help: "Lookups the online tier answered."},
			func() float64 { return float64(t.hits.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tailor_online_tier_misses_total", Help: "Lookups the online tier could not answer."},
			func() float64 { return float64(t.misses.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tailor_online_tier_evictions_total", Help: "Entries evicted to stay within the byte budget."},
			func() float64 { return float64(t.evictions.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tailor_online_tier_entries", Help: "Entries held."},
			func() float64 { return float64(t.Stats().Entries) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tailor_online_tier_bytes", Help: "Bytes held, as accounted against the budget."},
			func() float64 { return float64(t.Stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tailor_online_tier_budget_bytes", Help: "The byte budget."},
			func() float64 { return float64(t.budget * int64(len(t.shards))) }),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
