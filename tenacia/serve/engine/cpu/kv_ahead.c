/* The next attention's cached keys and values fetched toward the caches while the products before
 * it stream their weights: included by kernels_avx512.c and kernels_vec.c after gemm_input.c,
 * used by their panel loops and by decode_stack.c.
 *
 * Why: a decode step's attention reads every sequence's keys and values of the layer (SmolLM2, 16
 * sequences of 100 tokens: 2.5 MB a layer) from memory and does little arithmetic on them: it
 * waits on those reads (~27 GB/s, against the 37-68 GB/s the machine reads at). The products
 * between two attentions (the output projection wo, gate/up and down of one layer, the next
 * layer's query/key/value product) do 16 multiply-adds per 64-byte line of weights for 16 rows:
 * bound by arithmetic, the memory half idle. Every AHEAD_EVERY-th step of their inner loop
 * prefetches one line of the next attention's keys and one of its values, so that the attention
 * finds them in L2 or L3 (~2% of a step of 16: docs/benchmarks.md, "The step of 16 against its
 * floor, with and without the engine's cores to itself"). Steps of fewer than AHEAD_ROWS rows,
 * whose products are bound by reading the weights, fetch nothing ahead; nor does the vector build
 * (kernels_vec.c) unless built with -DAHEAD: in its AVX2 build the step of 16 was level with and
 * without.
 *
 * A thread fetches the tasks (sequence, key/value head) of the attention it is likely to run: with
 * T threads taking tasks from one counter, thread t's are about t, t + T, t + 2T, ... A sequence's
 * keys (and values) of one head are its first lengths[b] rows of the decode mirror, contiguous
 * (kv_cache.py). At a line pair every 8 steps the two threads can fetch ~3.5 MB between two
 * attentions (SmolLM2, 16 rows; 2.5 MB at 100 tokens a sequence): what is not fetched by the
 * attention's start the attention reads as before. */
#ifndef AHEAD_EVERY
#define AHEAD_EVERY 8 /* inner-loop steps per prefetch of a key line and a value line */
#endif
#ifndef AHEAD_HINT
#define AHEAD_HINT 3 /* __builtin_prefetch's locality */
#endif
#ifndef AHEAD_ROWS
#define AHEAD_ROWS 16
#endif

struct ahead {
  const float *k, *v;  /* the layer's decode mirror, (B, KVH, cap, hd) */
  const long *lengths; /* rows of each sequence */
  long cap, hd, kv_heads;
  long task, end, by;  /* the tasks left: task, task + by, ... below end */
  const char *kp, *vp; /* the task in hand: its keys, its values */
  long at, bytes;      /* bytes of each fetched, of each in all */
};

/* from a->task on, the first task with keys; none left: a->task >= a->end */
static inline void ahead_task(struct ahead *a) {
  for (; a->task < a->end; a->task += a->by) {
    a->bytes = a->lengths[a->task / a->kv_heads] * a->hd * (long)sizeof(float);
    if (a->bytes > 0) {
      a->kp = (const char *)(a->k + a->task * a->cap * a->hd);
      a->vp = (const char *)(a->v + a->task * a->cap * a->hd);
      a->at = 0;
      return;
    }
  }
}

/* Inside a parallel region: this thread's part of the attention over the mirror k, v of `rows`
 * sequences, fetched from now on by ahead_step. */
static inline void ahead_start(struct ahead *a, const float *k, const float *v, const long *lengths, long cap,
                               long hd, long kv_heads, long rows) {
  a->k = k;
  a->v = v;
  a->lengths = lengths;
  a->cap = cap;
  a->hd = hd;
  a->kv_heads = kv_heads;
  a->task = omp_get_thread_num();
  a->by = omp_get_num_threads();
  a->end = rows * kv_heads;
  ahead_task(a);
}

/* nothing more to fetch */
static inline void ahead_stop(struct ahead *a) { a->end = 0; }

/* one line of keys and one of values, the next of this thread's part (none past its end) */
static inline void ahead_step(struct ahead *a) {
  if (a->task >= a->end) return;
  __builtin_prefetch(a->kp + a->at, 0, AHEAD_HINT);
  __builtin_prefetch(a->vp + a->at, 0, AHEAD_HINT);
  if ((a->at += 64) >= a->bytes) {
    a->task += a->by;
    ahead_task(a);
  }
}
