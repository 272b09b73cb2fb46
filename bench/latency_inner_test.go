package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestHistogramBuckets(t *testing.T) {
	for _, ns := range []uint64{0, 1, 31, 32, 33, 63, 64, 65, 1000, 1234567, 1 << 40} {
		i := bucket(ns)
		assert.LessOrEqual(t, lowerBound(i), ns, "ns=%d", ns)
		if i+1 < histSize {
			assert.Greater(t, lowerBound(i+1), ns, "ns=%d", ns)
		}
	}
	assert.Less(t, bucket(1<<63), histSize)
}

func TestHistogramQuantile(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	p99 := h.quantile(0.99)
	assert.InEpsilon(t, float64(990*time.Microsecond), float64(p99), 0.04)
	assert.InEpsilon(t, float64(500*time.Microsecond), float64(h.quantile(0.5)), 0.04)
	assert.Equal(t, time.Duration(0), (&histogram{}).quantile(0.99))
}
