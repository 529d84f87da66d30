/* The decode attention's kernel in AVX-512: one query group of G heads against a sequence's L
 * cached keys and values (attend_head), under the driver of attention_tasks.c. Included by
 * kernels_avx512.c, after its exp16 and tail, which it uses (<immintrin.h>, <math.h>). */
/* Attention of one new token per sequence over its cached keys and values.
 * q: query head h of sequence b at q + b * q_row + h * hd; k, v: (B, KVH, cap, hd), the decode
 * mirror of kv_cache.py (sequence b's keys are its first lengths[b] rows); query heads
 * kvh * G .. kvh * G + G - 1 read key/value head kvh (G = H / KVH, G <= 16, hd <= 512).
 * out: (B, H, hd). Softmax(q.k * scale) v, computed online over blocks of keys (the running
 * maximum rescales what came before), so any length runs in fixed memory. One task per
 * (sequence, key/value head), taken dynamically: tasks differ in length. The common shapes
 * (G * hd / 16 <= 16: SmolLM2's 3 x 64, Llama's 4 x 64, ...) run attend_fast, whose accumulators
 * stay in registers (the compiler specialises it for each constant G and NV); others attend_any. */
#define KEYS 32
#define MAX_GROUP 16
#define MAX_HD 512

/* One block of n scores (s, in place) joins a running softmax: the block's maximum updates the
 * running maximum *m, s becomes exp(s - *m), *l the running sum. Returns the factor by which the
 * caller rescales what it accumulated before (0 on the first block, when *m was -inf). */
static inline float softmax_block(float *s, long n, float *m, float *l) {
  __m512 most = _mm512_set1_ps(*m);
  for (long j = 0; j < n; j += 16) most = _mm512_max_ps(most, _mm512_mask_loadu_ps(most, tail(n - j), s + j));
  float top = _mm512_reduce_max_ps(most);
  float corr = expf(*m - top);
  __m512 sum = _mm512_setzero_ps();
  for (long j = 0; j < n; j += 16) {
    __mmask16 mk = tail(n - j);
    __m512 p = _mm512_maskz_mov_ps(mk, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + j), _mm512_set1_ps(top))));
    _mm512_mask_storeu_ps(s + j, mk, p);
    sum = _mm512_add_ps(sum, p);
  }
  *l = *l * corr + _mm512_reduce_add_ps(sum);
  *m = top;
  return corr;
}

/* The register-resident path, for G heads of NV * 16 floats (G * NV <= 16: the accumulators stay
 * in registers; the compiler specialises it for each constant G and NV). Keys come in blocks of
 * 16, one vector of scores a head: each key's 16 partial dot products (all heads from one load of
 * the key), 4 keys folded into one vector by in-lane shuffles (fold2, fold4), 16 into one by
 * 128-bit lane shuffles (fold_lanes): 45 operations for 16 scores, where a horizontal sum took ~8
 * for one. The block joins the running softmax in vectors only: its maximum broadcast to every
 * lane (max16), the running sum l kept per lane and summed at the end. The values are then added
 * with the probabilities broadcast from one 64-byte row per head, in L1.
 * The keys and values stream in from memory (SmolLM2, 16 sequences of 101 tokens: 16 x 30 layers
 * x 3 key/value heads x 101 rows x 256 bytes x 2 = 74 MB a step) by the hardware's prefetchers
 * alone: software prefetches a block ahead, or 8, 32, 64 rows ahead, made this stage slower
 * (bench/decode_stack_ab.py --stages); so did blocks of 32 keys. The driver still fetches the
 * first keys of the next task (attention_tasks.c). */

/* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
static inline __m512 fold2(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}
/* fold2(a, b), fold2(c, d) -> per 128-bit lane: the lane's sums of a, b, c, d */
static inline __m512 fold4(__m512 ab, __m512 cd) {
  return _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
}
/* a, b: per 128-bit lane, sums of 4 keys each (keys 0-3 of a, 4-7 of b, or of 8 and 8) -> the
 * lanes' sums paired: applied to (keys 0-3, 4-7) and (8-11, 12-15), then to the two results, it
 * leaves key j's whole sum in lane j */
static inline __m512 fold_lanes(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
}
/* every lane: the largest of s's 16 */
static inline __m512 max16(__m512 s) {
  s = _mm512_max_ps(s, _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm512_max_ps(s, _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(2, 3, 0, 1)));
  s = _mm512_max_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm512_max_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* Key j of the block at K (n keys valid): d[g], its partial dot products with head g's query (NV
 * vectors a head, from L1). Past n, the last valid key again (its score is masked by the caller). */
static inline __attribute__((always_inline)) void key_dots(const float *Q, const float *K, long j, long n, __m512 *d,
                                                           const int G, const int NV) {
  const float *kt = K + (j < n ? j : n - 1) * NV * 16;
  __m512 kv[8];
  for (int v = 0; v < NV; v++) kv[v] = _mm512_loadu_ps(kt + v * 16);
  for (int g = 0; g < G; g++) {
    d[g] = _mm512_mul_ps(_mm512_loadu_ps(Q + g * NV * 16), kv[0]);
    for (int v = 1; v < NV; v++) d[g] = _mm512_fmadd_ps(_mm512_loadu_ps(Q + (g * NV + v) * 16), kv[v], d[g]);
  }
}

/* Keys j0 .. j0 + 3 (j0 < n): w[g], per 128-bit lane, head g's sums of the four (fold4) */
static inline __attribute__((always_inline)) void quad(const float *Q, const float *K, long j0, long n, __m512 *w,
                                                       const int G, const int NV) {
  __m512 a[16], b[16], pair[16];
  key_dots(Q, K, j0, n, a, G, NV);
  key_dots(Q, K, j0 + 1, n, b, G, NV);
  for (int g = 0; g < G; g++) pair[g] = fold2(a[g], b[g]);
  key_dots(Q, K, j0 + 2, n, a, G, NV);
  key_dots(Q, K, j0 + 3, n, b, G, NV);
  for (int g = 0; g < G; g++) w[g] = fold4(pair[g], fold2(a[g], b[g]));
}

/* Keys j0 .. j0 + 7 (j0 < n): x[g], head g's sums of keys j0 .. j0 + 3 as halves in 128-bit lanes
 * 0 and 1, of the next four in lanes 2 and 3 (fold_lanes of two quads; past n, zeros) */
static inline __attribute__((always_inline)) void octet(const float *Q, const float *K, long j0, long n, __m512 *x,
                                                        const int G, const int NV) {
  __m512 w0[16], w1[16];
  quad(Q, K, j0, n, w0, G, NV);
  if (j0 + 4 < n) quad(Q, K, j0 + 4, n, w1, G, NV);
  else
    for (int g = 0; g < G; g++) w1[g] = _mm512_setzero_ps();
  for (int g = 0; g < G; g++) x[g] = fold_lanes(w0[g], w1[g]);
}

/* The block of n <= 16 keys at K: s[g], head g's 16 scores in key order (unscaled; past n, any
 * finite value) */
static inline __attribute__((always_inline)) void scores16(const float *Q, const float *K, long n, __m512 *s,
                                                           const int G, const int NV) {
  __m512 x[16], y[16];
  octet(Q, K, 0, n, x, G, NV);
  if (8 < n) octet(Q, K, 8, n, y, G, NV);
  else
    for (int g = 0; g < G; g++) y[g] = _mm512_setzero_ps();
  for (int g = 0; g < G; g++) s[g] = fold_lanes(x[g], y[g]);
}

static inline __attribute__((always_inline)) void attend_fast(const float *Q, const float *K, const float *V, long L,
                                                              float scale, float *O, const int G, const int NV) {
  const long hd = NV * 16;
  __m512 acc[16], m[16], l[16];
  float p[16][16] __attribute__((aligned(64))); /* a block's probabilities, head by head */
  for (int g = 0; g < G; g++) {
    m[g] = _mm512_set1_ps(-INFINITY);
    l[g] = _mm512_setzero_ps();
    for (int v = 0; v < NV; v++) acc[g * NV + v] = _mm512_setzero_ps();
  }
  for (long t0 = 0; t0 < L; t0 += 16) {
    long n = L - t0 < 16 ? L - t0 : 16;
    __mmask16 valid = tail(n);
    __m512 s[16];
    scores16(Q, K + t0 * hd, n, s, G, NV);
    for (int g = 0; g < G; g++) { /* the block joins the running softmax; past n, score -inf, p 0 */
      s[g] = _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), valid, s[g], _mm512_set1_ps(scale));
      __m512 top = max16(_mm512_max_ps(m[g], s[g]));
      __m512 corr = exp16(_mm512_sub_ps(m[g], top)); /* ~1e-38 on the first block, when acc and l are 0 */
      __m512 e = _mm512_maskz_mov_ps(valid, exp16(_mm512_sub_ps(s[g], top)));
      l[g] = _mm512_fmadd_ps(l[g], corr, e);
      _mm512_store_ps(p[g], e);
      m[g] = top;
      for (int v = 0; v < NV; v++) acc[g * NV + v] = _mm512_mul_ps(acc[g * NV + v], corr);
    }
    for (long j = 0; j < n; j++) {
      const float *vt = V + (t0 + j) * hd;
      __m512 vv[8];
      for (int v = 0; v < NV; v++) vv[v] = _mm512_loadu_ps(vt + v * 16);
      for (int g = 0; g < G; g++) {
        __m512 pj = _mm512_set1_ps(p[g][j]);
        for (int v = 0; v < NV; v++) acc[g * NV + v] = _mm512_fmadd_ps(pj, vv[v], acc[g * NV + v]);
      }
    }
  }
  for (int g = 0; g < G; g++) {
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(l[g]));
    for (int v = 0; v < NV; v++) _mm512_storeu_ps(O + g * hd + v * 16, _mm512_mul_ps(acc[g * NV + v], inv));
  }
}

static void attend_any(const float *Q, const float *K, const float *V, long L, float scale, float *O, long G,
                       long hd) {
  float acc[MAX_GROUP][MAX_HD], m[MAX_GROUP], l[MAX_GROUP], s[MAX_GROUP][KEYS];
  for (long t = 0; t < KEYS && t < L; t++) {  /* the first block's keys and values: start both streams */
    _mm_prefetch((const char *)(K + t * hd), _MM_HINT_T0);
    _mm_prefetch((const char *)(V + t * hd), _MM_HINT_T0);
  }
  for (long g = 0; g < G; g++) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
    for (long d = 0; d < hd; d++) acc[g][d] = 0.0f;
  }
  for (long t0 = 0; t0 < L; t0 += KEYS) {
    long n = L - t0 < KEYS ? L - t0 : KEYS;
    for (long j = 0; j < n; j++) {
      const float *kt = K + (t0 + j) * hd;
      for (long d = 0; d < hd; d += 16) {  /* the next block's keys and values, a block ahead */
        _mm_prefetch((const char *)(kt + KEYS * hd + d), _MM_HINT_T0);
        _mm_prefetch((const char *)(V + (t0 + j + KEYS) * hd + d), _MM_HINT_T0);
      }
      for (long g = 0; g < G; g++) {
        __m512 dot = _mm512_setzero_ps();
        for (long d = 0; d < hd; d += 16) {
          __mmask16 mk = tail(hd - d);
          dot = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, Q + g * hd + d), _mm512_maskz_loadu_ps(mk, kt + d), dot);
        }
        s[g][j] = _mm512_reduce_add_ps(dot) * scale;
      }
    }
    for (long g = 0; g < G; g++) {
      __m512 c = _mm512_set1_ps(softmax_block(s[g], n, &m[g], &l[g]));
      for (long d = 0; d < hd; d += 16) {
        __mmask16 mk = tail(hd - d);
        _mm512_mask_storeu_ps(acc[g] + d, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, acc[g] + d), c));
      }
    }
    for (long j = 0; j < n; j++) {
      const float *vt = V + (t0 + j) * hd;
      for (long g = 0; g < G; g++) {
        __m512 p = _mm512_set1_ps(s[g][j]);
        for (long d = 0; d < hd; d += 16) {
          __mmask16 mk = tail(hd - d);
          _mm512_mask_storeu_ps(acc[g] + d, mk,
                                _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(mk, vt + d), _mm512_maskz_loadu_ps(mk, acc[g] + d)));
        }
      }
    }
  }
  for (long g = 0; g < G; g++) {
    __m512 inv = _mm512_set1_ps(1.0f / l[g]);
    float *o = O + g * hd;
    for (long d = 0; d < hd; d += 16) {
      __mmask16 mk = tail(hd - d);
      _mm512_mask_storeu_ps(o + d, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, acc[g] + d), inv));
    }
  }
}

/* One query group (G heads) against L keys and values: the register-resident path where the
 * shape has one, else the general one. */
static void attend_head(const float *Q, const float *K, const float *V, long L, float scale, float *O, long G,
                        long hd) {
  long NV = hd % 16 ? 0 : hd / 16;
#define FAST(g, nv) else if (G == g && NV == nv) attend_fast(Q, K, V, L, scale, O, g, nv);
  if (0) {}
  FAST(1, 4) FAST(2, 4) FAST(3, 4) FAST(4, 4) FAST(1, 8) FAST(2, 8)
  else attend_any(Q, K, V, L, scale, O, G, hd);
#undef FAST
}
