/* The vector kernels (tenacia/serve/engine/cpu/kernels_vec.c), with the prefill's attention and
 * the decode stack (decode_stack.c) it includes, against plain C references in double precision,
 * with no Python: built by test_cpu_kernels_cross.py for this CPU and, with
 * Debian's cross compiler, for aarch64 (NEON) and run under qemu-user. Prints one line per check;
 * exits 1 at the first check that fails, naming it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels_vec.c"

static unsigned long long seed = 88172645463325252ULL;
static float rnd(void) { /* xorshift, uniform in [-1, 1) */
  seed ^= seed << 13;
  seed ^= seed >> 7;
  seed ^= seed << 17;
  return (float)((seed >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *fill(long n) {
  float *p = malloc(n * sizeof(float));
  for (long i = 0; i < n; i++) p[i] = rnd();
  return p;
}
static int failed(const char *what, double err, double tol) {
  printf("%s %s: max error %.3g (tolerance %.3g)\n", err <= tol ? "ok" : "FAIL", what, err, tol);
  return err > tol;
}

static int check_gemm(long m, long k, long n, int bias) {
  float *x = fill(m * k), *w = fill(n * k), *b = bias ? fill(n) : NULL, *y = malloc(m * n * sizeof(float));
  float *p = malloc(((n + 15) / 16) * 16 * k * sizeof(float));
  tenacia_small_gemm_pack(w, n, k, p);
  tenacia_small_gemm(x, m, k, p, n, b, y, 2);
  double err = 0;
  for (long r = 0; r < m; r++)
    for (long c = 0; c < n; c++) {
      double s = b ? b[c] : 0;
      for (long i = 0; i < k; i++) s += (double)x[r * k + i] * w[c * k + i];
      err = fmax(err, fabs(y[r * n + c] - s) / (1.0 + fabs(s)));
    }
  char what[80];
  snprintf(what, sizeof what, "small_gemm %ld x %ld -> %ld%s", m, k, n, bias ? " + bias" : "");
  free(x), free(w), free(b), free(y), free(p);
  return failed(what, err, 1e-5);
}

static int check_elementwise(long rows) {
  long dim = 100, heads = 3, hd = 12, ld = heads * hd + 5, n = 37, fails = 0;
  float *x = fill(rows * dim), *d = fill(rows * dim), *w = fill(dim), *out = malloc(rows * dim * sizeof(float));
  float *x0 = malloc(rows * dim * sizeof(float));
  for (long i = 0; i < rows * dim; i++) x0[i] = x[i];
  tenacia_add_rms_norm(x, d, w, 1e-5f, out, rows, dim, 2);
  double err = 0;
  for (long r = 0; r < rows; r++) {
    double ss = 0;
    for (long i = 0; i < dim; i++) ss += ((double)x0[r * dim + i] + d[r * dim + i]) * ((double)x0[r * dim + i] + d[r * dim + i]);
    double scale = 1.0 / sqrt(ss / dim + 1e-5);
    for (long i = 0; i < dim; i++) {
      double s = (double)x0[r * dim + i] + d[r * dim + i];
      err = fmax(err, fabs(x[r * dim + i] - s));
      err = fmax(err, fabs(out[r * dim + i] - s * scale * w[i]));
    }
  }
  fails += failed("add_rms_norm", err, 1e-5);

  float *q = fill(rows * ld), *c = fill(rows * hd), *s = fill(rows * hd), *q0 = malloc(rows * ld * sizeof(float));
  for (long i = 0; i < rows * ld; i++) q0[i] = q[i];
  tenacia_rotary(q, rows, ld, heads, hd, c, s, 2);
  err = 0;
  for (long r = 0; r < rows; r++)
    for (long i = 0; i < ld; i++) {
      long h = i / hd, j = i % hd, half = hd / 2;
      double want = q0[r * ld + i];
      if (h < heads) {
        const float *a = q0 + r * ld + h * hd;
        double rot = j < half ? -a[j + half] : a[j - half];
        want = a[j] * (double)c[r * hd + j] + rot * s[r * hd + j];
      }
      err = fmax(err, fabs(q[r * ld + i] - want));
    }
  fails += failed("rotary (heads past the first 3 left alone)", err, 1e-6);

  float *gu = malloc(rows * 2 * n * sizeof(float)), *o = malloc(rows * n * sizeof(float));
  for (long i = 0; i < rows * 2 * n; i++) gu[i] = rnd() * 40.0f; /* far into both tails */
  tenacia_silu_mul(gu, gu + n, 2 * n, rows, n, o, 2);
  err = 0;
  for (long r = 0; r < rows; r++)
    for (long i = 0; i < n; i++) {
      double g = gu[r * 2 * n + i], u = gu[r * 2 * n + n + i], want = g / (1.0 + exp(-g)) * u;
      err = fmax(err, fabs(o[r * n + i] - want) / (1.0 + fabs(want)));
    }
  fails += failed("silu_mul", err, 1e-6);
  free(x), free(d), free(w), free(out), free(x0), free(q), free(c), free(s), free(q0), free(gu), free(o);
  return fails != 0;
}

static int check_attention(long H, long KVH, long hd) {
  long B = 5, cap = 80, lengths[5] = {1, 31, 32, 33, 80}, slots[5] = {7, 0, 3, 9, 12}, G = H / KVH, q_row = (H + 2 * KVH) * hd;
  float *qkv = fill(B * q_row), *mk = fill(B * KVH * cap * hd), *mv = fill(B * KVH * cap * hd);
  float *ck = calloc(16 * KVH * hd, sizeof(float)), *cv = calloc(16 * KVH * hd, sizeof(float));
  float *out = malloc(B * H * hd * sizeof(float));
  const float *k = qkv + H * hd, *v = qkv + (H + KVH) * hd;
  tenacia_store_kv(k, v, q_row, B, KVH, hd, ck, cv, slots, mk, mv, cap, lengths);
  tenacia_decode_attention(qkv, q_row, mk, mv, cap, lengths, B, H, KVH, hd, 1.0f / sqrtf((float)hd), out, 2);
  double err = 0, stored = 0;
  for (long b = 0; b < B; b++)
    for (long kh = 0; kh < KVH; kh++) {
      const float *K = mk + (b * KVH + kh) * cap * hd, *V = mv + (b * KVH + kh) * cap * hd;
      for (long d = 0; d < hd; d++) {
        stored = fmax(stored, fabs(K[(lengths[b] - 1) * hd + d] - k[b * q_row + kh * hd + d]));
        stored = fmax(stored, fabs(cv[(slots[b] * KVH + kh) * hd + d] - v[b * q_row + kh * hd + d]));
      }
      for (long g = 0; g < G; g++) {
        const float *Q = qkv + b * q_row + (kh * G + g) * hd;
        double sc[80], m = -1e300, l = 0;
        for (long t = 0; t < lengths[b]; t++) {
          double s = 0;
          for (long d = 0; d < hd; d++) s += (double)Q[d] * K[t * hd + d];
          sc[t] = s / sqrt((double)hd);
          m = fmax(m, sc[t]);
        }
        for (long t = 0; t < lengths[b]; t++) l += exp(sc[t] - m);
        for (long d = 0; d < hd; d++) {
          double o = 0;
          for (long t = 0; t < lengths[b]; t++) o += exp(sc[t] - m) / l * V[t * hd + d];
          err = fmax(err, fabs(out[(b * H + kh * G + g) * hd + d] - o));
        }
      }
    }
  char what[96];
  snprintf(what, sizeof what, "store_kv + decode_attention, %ld heads on %ld, head size %ld", H, KVH, hd);
  free(qkv), free(mk), free(mv), free(ck), free(cv), free(out);
  return failed(what, fmax(err, stored), 1e-5);
}

/* The references need no speed: not vectorised (aarch64-linux-gnu-gcc 12 stops with an internal
 * error vectorising check_prefill_attention's reductions). */
#define REFERENCE __attribute__((noinline, optimize("no-tree-vectorize")))

/* attention of one query over L keys and values (key t at K + t * ld), in double */
REFERENCE static void ref_attend(const float *Q, const float *K, const float *V, long L, long hd, long ld, double *o) {
  double sc[128], m = -1e300, l = 0;
  for (long t = 0; t < L; t++) {
    double s = 0;
    for (long d = 0; d < hd; d++) s += (double)Q[d] * K[t * ld + d];
    sc[t] = s / sqrt((double)hd);
    m = fmax(m, sc[t]);
  }
  for (long t = 0; t < L; t++) l += exp(sc[t] - m);
  for (long d = 0; d < hd; d++) {
    o[d] = 0;
    for (long t = 0; t < L; t++) o[d] += exp(sc[t] - m) / l * V[t * ld + d];
  }
}

/* q, k and v views of one fused product (n rows of H + 2 KVH heads), as the engine passes them */
REFERENCE static int check_prefill_attention(long H, long KVH, long hd, long n) {
  long G = H / KVH, q_row = (H + 2 * KVH) * hd;
  float *q = fill(n * q_row), *k = q + H * hd, *v = k + KVH * hd, *out = malloc(n * H * hd * sizeof(float));
  tenacia_prefill_attention(q, q_row, k, hd, q_row, v, hd, q_row, 0, n, H, KVH, hd, 1.0f / sqrtf((float)hd), out, 2);
  double err = 0, o[512];
  for (long i = 0; i < n; i++)
    for (long h = 0; h < H; h++) {
      ref_attend(q + i * q_row + h * hd, k + (h / G) * hd, v + (h / G) * hd, i + 1, hd, q_row, o);
      for (long d = 0; d < hd; d++) err = fmax(err, fabs(out[(i * H + h) * hd + d] - o[d]));
    }
  char what[96];
  snprintf(what, sizeof what, "prefill_attention, %ld tokens, %ld heads on %ld, head size %ld", n, H, KVH, hd);
  free(q), free(out);
  return failed(what, err, 1e-5);
}

/* y (m x n) = x (m x k) . W^T (+ b), in double */
REFERENCE static void ref_linear(const double *x, long m, long k, const float *w, long n, const float *b, double *y) {
  for (long r = 0; r < m; r++)
    for (long c = 0; c < n; c++) {
      double s = b ? b[c] : 0;
      for (long i = 0; i < k; i++) s += x[r * k + i] * w[c * k + i];
      y[r * n + c] = s;
    }
}

REFERENCE static void ref_norm(double *x, const double *d, const float *w, double eps, double *h, long rows, long dim) {
  for (long r = 0; r < rows; r++) {
    double ss = 0;
    for (long i = 0; i < dim; i++) {
      if (d) x[r * dim + i] += d[r * dim + i];
      ss += x[r * dim + i] * x[r * dim + i];
    }
    double scale = 1.0 / sqrt(ss / dim + eps);
    for (long i = 0; i < dim; i++) h[r * dim + i] = x[r * dim + i] * scale * w[i];
  }
}

static float *scaled(long n, double scale) {
  float *p = fill(n);
  for (long i = 0; i < n; i++) p[i] *= (float)scale;
  return p;
}

/* The decode stack (decode_stack.c) against the layers computed one by one in double, from the
 * plain weights: the residual stream it returns, and the keys and values it wrote to the cache
 * and the mirror. rows sequences, sequence r with lengths[r] keys (its new one included). */
REFERENCE static int check_decode_stack(long rows, long heads, long kv_heads, long hd, int bias) {
  enum { LAYERS = 2, CAP = 48, SLOTS = 64 };
  long dim = heads * hd, hidden = 40, qd = heads * hd, kvd = kv_heads * hd, qkvn = qd + 2 * kvd, G = heads / kv_heads;
  long lengths[32], slots[32], table[LAYERS * 7];
  float *norms[LAYERS][2], *w[LAYERS][4], *b[LAYERS], *panels[LAYERS][4];
  long wn[4] = {qkvn, dim, 2 * hidden, dim}, wk[4] = {dim, qd, dim, hidden};
  for (long r = 0; r < rows; r++) lengths[r] = 1 + (r * 13 + 5) % CAP, slots[r] = (r * 7 + 3) % SLOTS;
  for (long l = 0; l < LAYERS; l++) {
    norms[l][0] = fill(dim), norms[l][1] = fill(dim);
    b[l] = bias ? fill(qkvn) : NULL;
    for (int j = 0; j < 4; j++) {
      w[l][j] = scaled(wn[j] * wk[j], 1.0 / sqrt((double)wk[j]));
      panels[l][j] = malloc(((wn[j] + 15) / 16) * 16 * wk[j] * sizeof(float));
      tenacia_small_gemm_pack(w[l][j], wn[j], wk[j], panels[l][j]);
    }
    const float *row[7] = {norms[l][0], norms[l][1], panels[l][0], b[l], panels[l][1], panels[l][2], panels[l][3]};
    for (int j = 0; j < 7; j++) table[l * 7 + j] = (long)row[j];
  }
  long mirror_layer = rows * kv_heads * CAP * hd, cache_layer = SLOTS * kv_heads * hd;
  float *x = fill(rows * dim), *cos = fill(rows * hd), *sin = fill(rows * hd);
  float *mk = fill(LAYERS * mirror_layer), *mv = fill(LAYERS * mirror_layer);
  float *ck = calloc(LAYERS * cache_layer, sizeof(float)), *cv = calloc(LAYERS * cache_layer, sizeof(float));
  float *mk0 = malloc(LAYERS * mirror_layer * sizeof(float)), *mv0 = malloc(LAYERS * mirror_layer * sizeof(float));
  for (long i = 0; i < LAYERS * mirror_layer; i++) mk0[i] = mk[i], mv0[i] = mv[i];
  double *rx = malloc(rows * dim * sizeof(double)), *h = malloc(rows * dim * sizeof(double));
  double *qkv = malloc(rows * qkvn * sizeof(double)), *att = malloc(rows * qd * sizeof(double));
  double *gu = malloc(rows * 2 * hidden * sizeof(double)), *act = malloc(rows * hidden * sizeof(double));
  double *d = malloc(rows * dim * sizeof(double)), o[512];
  float *qf = malloc(qkvn * sizeof(float));
  for (long i = 0; i < rows * dim; i++) rx[i] = x[i];
  float *scratch = malloc(tenacia_decode_stack_scratch(rows, dim, heads, kv_heads, hd, hidden) * sizeof(float));
  tenacia_decode_stack(LAYERS, table, dim, heads, kv_heads, hd, hidden, 1e-5f, x, rows, cos, sin, ck, cv, cache_layer,
                       slots, mk, mv, mirror_layer, CAP, lengths, scratch, 2);
  double err = 0, stored = 0;
  for (long l = 0; l < LAYERS; l++) {
    ref_norm(rx, l ? d : NULL, norms[l][0], 1e-5, h, rows, dim);
    ref_linear(h, rows, dim, w[l][0], qkvn, b[l], qkv);
    for (long r = 0; r < rows; r++) {
      double *row = qkv + r * qkvn;
      for (long hh = 0; hh < heads + kv_heads; hh++) { /* rotate half */
        double *a = row + hh * hd, tmp[512];
        for (long j = 0; j < hd; j++) tmp[j] = a[j];
        for (long j = 0; j < hd; j++) {
          double rot = j < hd / 2 ? -tmp[j + hd / 2] : tmp[j - hd / 2];
          a[j] = tmp[j] * cos[r * hd + j] + rot * sin[r * hd + j];
        }
      }
      for (long kh = 0; kh < kv_heads; kh++) { /* the new key and value, and the attention of its group */
        float *K = mk0 + l * mirror_layer + (r * kv_heads + kh) * CAP * hd;
        float *V = mv0 + l * mirror_layer + (r * kv_heads + kh) * CAP * hd;
        for (long j = 0; j < hd; j++) {
          double kj = row[qd + kh * hd + j], vj = row[qd + kvd + kh * hd + j];
          long at = (lengths[r] - 1) * hd + j, slot = (slots[r] * kv_heads + kh) * hd + j;
          stored = fmax(stored, fabs(mk[l * mirror_layer + (r * kv_heads + kh) * CAP * hd + at] - kj));
          stored = fmax(stored, fabs(mv[l * mirror_layer + (r * kv_heads + kh) * CAP * hd + at] - vj));
          stored = fmax(stored, fabs(ck[l * cache_layer + slot] - kj) + fabs(cv[l * cache_layer + slot] - vj));
          K[at] = (float)kj, V[at] = (float)vj;
        }
        for (long g = 0; g < G; g++) {
          for (long j = 0; j < hd; j++) qf[j] = (float)row[(kh * G + g) * hd + j];
          ref_attend(qf, K, V, lengths[r], hd, hd, o);
          for (long j = 0; j < hd; j++) att[r * qd + (kh * G + g) * hd + j] = o[j];
        }
      }
    }
    ref_linear(att, rows, qd, w[l][1], dim, NULL, d);
    ref_norm(rx, d, norms[l][1], 1e-5, h, rows, dim);
    ref_linear(h, rows, dim, w[l][2], 2 * hidden, NULL, gu);
    for (long r = 0; r < rows; r++)
      for (long i = 0; i < hidden; i++) {
        double g = gu[r * 2 * hidden + i];
        act[r * hidden + i] = g / (1.0 + exp(-g)) * gu[r * 2 * hidden + hidden + i];
      }
    ref_linear(act, rows, hidden, w[l][3], dim, NULL, d);
  }
  for (long i = 0; i < rows * dim; i++) err = fmax(err, fabs(x[i] - (rx[i] + d[i])) / (1.0 + fabs(rx[i] + d[i])));
  char what[112];
  snprintf(what, sizeof what, "decode_stack, %ld rows, %ld heads on %ld, head size %ld%s", rows, heads, kv_heads, hd,
           bias ? ", qkv bias" : "");
  for (long l = 0; l < LAYERS; l++) {
    free(norms[l][0]), free(norms[l][1]), free(b[l]);
    for (int j = 0; j < 4; j++) free(w[l][j]), free(panels[l][j]);
  }
  free(x), free(cos), free(sin), free(mk), free(mv), free(ck), free(cv), free(mk0), free(mv0), free(rx), free(h);
  free(qkv), free(att), free(gu), free(act), free(d), free(qf), free(scratch);
  /* relative to the residual stream, absolute for the stored keys and values (of size ~1) */
  return failed(what, err, 2e-5) || failed("  its cache and mirror writes", stored, 2e-5);
}

int main(void) {
  printf("VEC %d\n", VEC);
  for (long m = 1; m <= 16; m++)
    if (check_gemm(m, 200, 40, m % 2)) return 1;
  if (check_gemm(37, 300, 23, 1) || check_gemm(128, 130, 48, 0)) return 1;
  for (long rows = 1; rows <= 70; rows += 69) /* one row, and a prefill's threaded rows */
    if (check_elementwise(rows)) return 1;
  /* the register-resident paths (G 1-4 with head size 64, G 1-2 with 128) and the general one */
  if (check_attention(9, 3, 64) || check_attention(4, 2, 128) || check_attention(10, 2, 48) || check_attention(4, 4, 16))
    return 1;
  for (long n = 1; n <= 128; n += 23) /* the prefill's attention: across its blocks of 16 tokens and 64 keys */
    if (check_prefill_attention(9, 3, 64, n) || check_prefill_attention(4, 2, 128, n) || check_prefill_attention(10, 2, 48, n) ||
        check_prefill_attention(4, 1, 20, n))
      return 1;
  /* the decode stack: every row count of a decode (1 .. 32), with a bias, on both attention paths */
  for (long rows = 1; rows <= 32; rows++)
    if (check_decode_stack(rows, 3, 1, 64, rows % 2) || check_decode_stack(rows, 4, 2, 16, rows % 2 == 0)) return 1;
  printf("all checks passed\n");
  return 0;
}
