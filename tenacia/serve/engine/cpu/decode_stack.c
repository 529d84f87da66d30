/* A decode step's decoder layers, all of them, in one OpenMP parallel region: included at the end
 * of kernels_avx512.c and of kernels_vec.c, it is built from each build's own row and panel
 * functions (gemm_panels, norm_row, rotary_row, store_kv_row, attend_task, silu_row), so it is
 * the same arithmetic as the separate calls the model would otherwise make, in the same order.
 *
 * Why: a decode step made ~150 calls into the kernels (five products, the norms, rotary, the
 * attention a layer), each from Python, each product a fork and join of the OpenMP team, with the
 * team idle while Python set up the next call. Here the team is formed once a step; the products'
 * panels are shared among the threads, the rows' elementwise work too, and the attention's tasks
 * are taken dynamically; a barrier separates each stage from the next. (Measured in
 * docs/benchmarks.md, "Serving on AMD Zen 4 with AVX-512", the run of 2026-12-03 17:20.)
 *
 * Per layer l, for rows r (one new token per sequence), with x the residual stream and d the
 * previous layer's output (none before the first layer):
 *   h = RMSNorm(x += d) * attn_norm;  qkv = h . Wqkv^T + bqkv;  rotary on q and k;
 *   k, v -> the cache slot and the mirror row of each sequence;  a = attention(q, mirror);
 *   h = RMSNorm(x += a . Wo^T) * ffn_norm;  gu = h . [Wgate | Wup]^T;  d = (silu(g) * u) . Wdown^T
 * and after the last layer x += d.
 *
 * weights: (layers, 7) pointers: attn_norm, ffn_norm, the panels of qkv, the qkv bias (or 0), the
 * panels of wo, of [gate | up] and of down. cache_k, cache_v: layer 0 of the paged cache, a layer
 * every cache_layer floats; mirror_k, mirror_v: layer 0 of the decode mirror (B, KVH, cap, hd),
 * a layer every mirror_layer floats. scratch: tenacia_decode_stack_scratch(...) floats. Each
 * product reads its input through a transposed copy (gemm_input.c), made by the threads together
 * before it, into one buffer all the products share. From the attention of one layer to that of
 * the next, the products' inner loops fetch the next attention's keys and values (kv_ahead.c;
 * steps of AHEAD_ROWS rows or more, unless built with -DNO_AHEAD). */
#include <stdint.h>

enum { W_ATTN_NORM, W_FFN_NORM, W_QKV, W_QKV_BIAS, W_WO, W_GATE_UP, W_DOWN, W_COUNT };

/* Built with -DSTAGE_TIMES (bench/decode_stack_ab.py --stages only, never the engine's build):
 * each thread adds the seconds it spent in each stage, working (up to the stage's barrier) and
 * waiting (in the barrier, for the slowest thread), to tenacia_stage_seconds[thread][stage][0 or 1];
 * S_FORK's wait is from the call to the thread's start in the parallel region. */
enum { S_FORK, S_NORM, S_TRANSPOSE, S_QKV, S_ROTARY_STORE, S_ATTENTION, S_WO, S_GATE_UP, S_SILU, S_DOWN, S_COUNT };
#ifdef STAGE_TIMES
#define STAGE_THREADS 8
double tenacia_stage_seconds[STAGE_THREADS * S_COUNT * 2];
long tenacia_stage_count = S_COUNT, tenacia_stage_threads = STAGE_THREADS;
static __thread double stage_mark;
static inline void stage_time(int stage, int waiting) {
  double t = omp_get_wtime();
  int th = omp_get_thread_num();
  if (th < STAGE_THREADS) tenacia_stage_seconds[(th * S_COUNT + stage) * 2 + waiting] += t - stage_mark;
  stage_mark = t;
}
#define STAGE_START(t0) (stage_mark = (t0))
#define WORKED(s) stage_time(s, 0)
#define WAITED(s) stage_time(s, 1)
#define NOW() omp_get_wtime()
#else
#define STAGE_START(t0) ((void)(t0))
#define WORKED(s)
#define WAITED(s)
#define NOW() 0.0
#endif

static inline long max3(long a, long b, long c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

/* The floats of scratch tenacia_decode_stack needs for `rows` rows: the stages' activations and
 * the products' transposed input (plus 16 floats to align it to 64 bytes). */
long tenacia_decode_stack_scratch(long rows, long dim, long heads, long kv_heads, long hd, long hidden) {
  long qd = heads * hd, qkvn = qd + 2 * kv_heads * hd;
  return rows * (2 * dim + qkvn + qd + 3 * hidden + max3(dim, qd, hidden)) + 16;
}

/* x: (m, k) row-major; p: packed (tenacia_small_gemm_pack, 16-column panels); bias: (n,) or NULL;
 * y: (m, n) row-major. The threads transpose x together (gemm_input.c), then share the panels. */
void tenacia_small_gemm(const float *x, long m, long k, const float *p, long n, const float *bias, float *y,
                        int threads) {
  long panels = (n + 15) / 16;
  float *xt = m > 1 ? aligned_alloc(64, (m * k * sizeof(float) + 63) / 64 * 64) : 0;
#pragma omp parallel num_threads(threads)
  {
    const float *in = transpose_input(x, m, k, xt);
#pragma omp for schedule(static)
    for (long q = 0; q < panels; q++) gemm_panels(in, m, k, p, n, bias, y, q, q + 1, 0);
  }
  free(xt);
}

/* The same product with the rows shared among the threads instead of the panels, for a prefill's
 * many rows: each thread transposes its own contiguous rows (share) and runs them against every
 * panel, so that no thread reads a row of x or writes a row of y that another thread touches.
 * The elementwise kernels deal a prefill's rows in the same contiguous parts (OpenMP's static
 * schedule: the same parts wherever T divides m, fewer than T rows apart otherwise), so a row one of
 * them wrote is read here by the thread that wrote it, from its own caches. */
void tenacia_gemm_rows(const float *x, long m, long k, const float *p, long n, const float *bias, float *y,
                       int threads) {
  long panels = (n + 15) / 16;
  float *xt = aligned_alloc(64, ((m * k + 16 * (long)threads) * sizeof(float) + 63) / 64 * 64);
#pragma omp parallel num_threads(threads)
  {
    long r0, r1;
    share(m, &r0, &r1);
    float *mine = xt + (r0 * k + 16 * omp_get_thread_num() + 15) / 16 * 16; /* 64-byte aligned, apart */
    if (r1 - r0 == 1) gemm_panels(x + r0 * k, 1, k, p, n, bias, y + r0 * n, 0, panels, 0);
    else if (r1 > r0) {
      transpose_columns(x + r0 * k, r1 - r0, k, mine, 0, k);
      gemm_panels(mine, r1 - r0, k, p, n, bias, y + r0 * n, 0, panels, 0);
    }
  }
  free(xt);
}

/* this thread's share of y = x . W^T + bias, x read through xt (the team transposes it first),
 * then a barrier */
static inline void product(const float *x, float *xt, long rows, long k, const float *p, long n, const float *bias,
                           float *y, int stage, struct ahead *a) {
  const float *in = x;
  if (rows > 1) {
    transpose_share(x, rows, k, xt);
    WORKED(S_TRANSPOSE);
#pragma omp barrier
    WAITED(S_TRANSPOSE);
    in = xt;
  }
  long lo, hi;
  share((n + 15) / 16, &lo, &hi);
  gemm_panels(in, rows, k, p, n, bias, y, lo, hi, a);
  WORKED(stage);
#pragma omp barrier
  WAITED(stage);
  (void)stage;
}

/* this thread's rows' stage done: the time in it, the barrier, the time waited there */
#define STAGE_END(s) \
  do {               \
    WORKED(s);       \
    _Pragma("omp barrier") WAITED(s); \
  } while (0)

void tenacia_decode_stack(long layers, const long *weights, long dim, long heads, long kv_heads, long hd,
                          long hidden, float eps, float *x, long rows, const float *cos, const float *sin,
                          float *cache_k, float *cache_v, long cache_layer, const long *slots, float *mirror_k,
                          float *mirror_v, long mirror_layer, long cap, const long *lengths, float *scratch,
                          int threads) {
  long qd = heads * hd, kvd = kv_heads * hd, qkvn = qd + 2 * kvd;
  float *h = scratch, *qkv = h + rows * dim, *att = qkv + rows * qkvn, *gu = att + rows * qd;
  float *act = gu + rows * 2 * hidden, *d = act + rows * hidden;
  float *xt = (float *)(((uintptr_t)(d + rows * dim) + 63) & ~(uintptr_t)63);
  float scale = 1.0f / sqrtf((float)hd);
  long taken[layers]; /* the attention's tasks taken so far, a counter a layer */
  memset(taken, 0, sizeof taken);
  double called = NOW();
  (void)called;
#pragma omp parallel num_threads(threads)
  {
    STAGE_START(called);
    WAITED(S_FORK);
    long lo, hi;
    share(rows, &lo, &hi);
    struct ahead *ah = 0; /* the next attention's keys and values, fetched during the products */
#ifndef NO_AHEAD
    struct ahead ahead_buf;
    if (rows >= AHEAD_ROWS) {
      ah = &ahead_buf;
      ahead_start(ah, mirror_k, mirror_v, lengths, cap, hd, kv_heads, rows);
    }
#endif
    for (long l = 0; l < layers; l++) {
      const float *const *w = (const float *const *)(weights + l * W_COUNT);
      for (long r = lo; r < hi; r++) norm_row(x + r * dim, l ? d + r * dim : 0, w[W_ATTN_NORM], eps, h + r * dim, dim);
      STAGE_END(S_NORM);
      product(h, xt, rows, dim, w[W_QKV], qkvn, w[W_QKV_BIAS], qkv, S_QKV, ah);
      float *ck = cache_k + l * cache_layer, *cv = cache_v + l * cache_layer;
      float *mk = mirror_k + l * mirror_layer, *mv = mirror_v + l * mirror_layer;
      for (long r = lo; r < hi; r++) {
        rotary_row(qkv + r * qkvn, heads + kv_heads, hd, cos + r * hd, sin + r * hd);
        store_kv_row(qkv + qd, qkv + qd + kvd, qkvn, r, kv_heads, hd, ck, cv, slots, mk, mv, cap, lengths);
      }
      STAGE_END(S_ROTARY_STORE);
      /* the tasks taken one at a time from a counter, as OpenMP's dynamic schedule would, but the
       * next one taken before the one in hand is run, so that its first keys can be fetched */
      for (long next = __atomic_fetch_add(taken + l, 1, __ATOMIC_RELAXED), task; next < rows * kv_heads;) {
        task = next;
        next = __atomic_fetch_add(taken + l, 1, __ATOMIC_RELAXED);
        if (next < rows * kv_heads) prefetch_task(mk, mv, cap, lengths, kv_heads, hd, next);
        attend_task(qkv, qkvn, mk, mv, cap, lengths, heads, kv_heads, hd, scale, att, task);
      }
      if (ah && l + 1 < layers)
        ahead_start(ah, mirror_k + (l + 1) * mirror_layer, mirror_v + (l + 1) * mirror_layer, lengths, cap, hd,
                    kv_heads, rows);
      else if (ah)
        ahead_stop(ah);
      STAGE_END(S_ATTENTION);
      product(att, xt, rows, qd, w[W_WO], dim, 0, d, S_WO, ah);
      for (long r = lo; r < hi; r++) norm_row(x + r * dim, d + r * dim, w[W_FFN_NORM], eps, h + r * dim, dim);
      STAGE_END(S_NORM);
      product(h, xt, rows, dim, w[W_GATE_UP], 2 * hidden, 0, gu, S_GATE_UP, ah);
      for (long r = lo; r < hi; r++) silu_row(gu + r * 2 * hidden, gu + r * 2 * hidden + hidden, hidden, act + r * hidden);
      STAGE_END(S_SILU);
      product(act, xt, rows, hidden, w[W_DOWN], dim, 0, d, S_DOWN, ah);
    }
    for (long r = lo; r < hi; r++)
      for (long i = 0; i < dim; i++) x[r * dim + i] += d[r * dim + i];
    WORKED(S_NORM);
  }
}
