package train

import (
	"fmt"
	"math"
)

// The metrics score row-major n x K probabilities (as Predict returns)
// against labels y. A class tied with others on probability takes each of
// their ranks with equal chance, and a metric is the expectation over
// that draw: a model that ranks nothing (all classes equal) scores like a
// random guess, not like a perfect one. They panic on mismatched shapes or
// labels out of range, and return NaN for no rows.

// HitAtK is the share of rows whose true class is among the k most
// probable.
func HitAtK(probs []float32, y []int, classes, k int) float64 {
	return mean(probs, y, classes, func(greater, ties int) float64 {
		// The rank is uniform over greater+1 .. greater+ties+1.
		in := min(max(k-greater, 0), ties+1)
		return float64(in) / float64(ties+1)
	})
}

// Accuracy is HitAtK with k = 1.
func Accuracy(probs []float32, y []int, classes int) float64 {
	return HitAtK(probs, y, classes, 1)
}

// MRR is the mean reciprocal rank of the true class.
func MRR(probs []float32, y []int, classes int) float64 {
	return mean(probs, y, classes, func(greater, ties int) float64 {
		var sum float64
		for r := greater + 1; r <= greater+ties+1; r++ {
			sum += 1 / float64(r)
		}
		return sum / float64(ties+1)
	})
}

// logLossFloor bounds the probability LogLoss takes the log of.
const logLossFloor = 1e-15

// LogLoss is the mean negative log probability of the true class (each
// probability floored at 1e-15).
func LogLoss(probs []float32, y []int, classes int) float64 {
	shape(probs, y, classes)
	if len(y) == 0 {
		return math.NaN()
	}
	var sum float64
	for i, c := range y {
		sum -= math.Log(max(float64(probs[i*classes+c]), logLossFloor))
	}
	return sum / float64(len(y))
}

func mean(probs []float32, y []int, classes int, score func(greater, ties int) float64) float64 {
	shape(probs, y, classes)
	if len(y) == 0 {
		return math.NaN()
	}
	var sum float64
	for i, c := range y {
		row := probs[i*classes : i*classes+classes]
		p := row[c]
		greater, ties := 0, 0
		for k, q := range row {
			switch {
			case k == c:
			case q > p:
				greater++
			case q == p:
				ties++
			}
		}
		sum += score(greater, ties)
	}
	return sum / float64(len(y))
}

func shape(probs []float32, y []int, classes int) {
	if classes <= 0 || len(probs) != len(y)*classes {
		panic(fmt.Sprintf("train: len(probs) = %d, want len(y)*classes = %d*%d", len(probs), len(y), classes))
	}
	for i, c := range y {
		if c < 0 || c >= classes {
			panic(fmt.Sprintf("train: row %d: label %d out of range [0, %d)", i, c, classes))
		}
	}
}
