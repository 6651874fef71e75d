package onnxrt

import (
	"context"
	"fmt"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
)

// BenchmarkRun runs next_product.onnx (a 12-32-8 MLP with softmax) at batch
// 1 and 64:
//
//   - floor: the binding's AdvancedSession with input and output tensors
//     allocated once, so a Run is ONNX Runtime's own work plus one cgo call;
//   - run: Session.Run with context.Background();
//   - run-ort-allocates: the same with output preallocation off (ONNX
//     Runtime allocates the output and the binding copies it to Go memory);
//   - run-cancellable: Session.Run with a cancellable context (RunOptions
//     with a terminate flag);
//   - parallel: Session.Run from GOMAXPROCS goroutines on one session.
//
// All use one intra-op thread, the setting for a server running many
// requests at once; the ratio run/floor is this package's overhead.
func BenchmarkRun(b *testing.B) {
	model := readModel(b, "next_product")
	opt := SessionOptions{IntraOpThreads: 1}
	for _, batch := range []int{1, 64} {
		x := features(batch, 12)
		in := []Tensor{{Name: "features", Shape: []int64{int64(batch), 12}, Float32: x}}

		b.Run(fmt.Sprintf("batch=%d/floor", batch), func(b *testing.B) {
			so, err := ort.NewSessionOptions()
			if err != nil {
				b.Fatal(err)
			}
			defer so.Destroy()
			if err := so.SetIntraOpNumThreads(1); err != nil {
				b.Fatal(err)
			}
			input, err := ort.NewTensor(ort.NewShape(int64(batch), 12), x)
			if err != nil {
				b.Fatal(err)
			}
			defer input.Destroy()
			output, err := ort.NewEmptyTensor[float32](ort.NewShape(int64(batch), 8))
			if err != nil {
				b.Fatal(err)
			}
			defer output.Destroy()
			s, err := ort.NewAdvancedSessionWithONNXData(model, []string{"features"}, []string{"probabilities"},
				[]ort.Value{input}, []ort.Value{output}, so)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Destroy()
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Run(); err != nil {
					b.Fatal(err)
				}
			}
		})

		b.Run(fmt.Sprintf("batch=%d/run", batch), func(b *testing.B) {
			s := newSession(b, "next_product", opt)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Run(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
		})

		b.Run(fmt.Sprintf("batch=%d/run-ort-allocates", batch), func(b *testing.B) {
			s := newSession(b, "next_product", opt)
			s.noPrealloc.Store(true)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Run(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
		})

		b.Run(fmt.Sprintf("batch=%d/run-cancellable", batch), func(b *testing.B) {
			s := newSession(b, "next_product", opt)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Run(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
		})

		b.Run(fmt.Sprintf("batch=%d/parallel", batch), func(b *testing.B) {
			s := newSession(b, "next_product", opt)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := s.Run(ctx, in); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
