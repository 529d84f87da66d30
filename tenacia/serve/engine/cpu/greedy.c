/* Greedy sampling's choice, the same for every build: included by kernels_avx512.c and
 * kernels_vec.c after each defines its vector of VEC floats (vf, vload, hmax).
 *
 * Contract (tenacia_argmax_rows): out[r] = the first column of row r's largest value, row r's cols
 * floats at x + r * ld: torch's max(dim=1).indices, ties to the first. A row holding a NaN gets
 * no answer (torch's max propagates NaN): the return value is how many such rows there were, and
 * the caller asks torch for the whole batch then. Rows are shared among the threads.
 *
 * Why: torch's max with indices walks a row one float at a time (~0.33 ms for 16 rows of a 49,152
 * token vocabulary); here each lane keeps its own running maximum and the column where it first
 * reached it, and the row's answer is the smallest such column among the lanes that hold the
 * row's maximum. A lane only moves on a strictly larger value, so it keeps its first column. */

typedef int gi __attribute__((vector_size(sizeof(vf)))); /* one int a lane: masks and columns */

static int argmax_row(const float *x, long cols, long *out) {
  long best = 0, j = 0;
  float top = x[0];
  int nan = top != top;
  if (cols >= VEC) {
    vf m = vload(x);
    gi at, step, bad = (gi)(m != m);
    for (int i = 0; i < VEC; i++) at[i] = i, step[i] = VEC;
    gi col = at;
    for (j = VEC; j + VEC <= cols; j += VEC) {
      vf v = vload(x + j);
      col += step;
      gi up = (gi)(v > m); /* NaN is never larger: it stays out of m */
      bad |= (gi)(v != v);
      m = (vf)(((gi)v & up) | ((gi)m & ~up));
      at = (col & up) | (at & ~up);
    }
    top = hmax(m);
    best = cols;
    for (int i = 0; i < VEC; i++) {
      nan |= bad[i] != 0;
      if (m[i] == top && at[i] < best) best = at[i];
    }
  } else {
    j = 1;
  }
  for (; j < cols; j++) { /* the columns after the last whole vector: later than any above */
    nan |= x[j] != x[j];
    if (x[j] > top) top = x[j], best = j;
  }
  *out = best;
  return nan;
}

long tenacia_argmax_rows(const float *x, long rows, long cols, long ld, long *out, int threads) {
  long nan_rows = 0;
#pragma omp parallel for schedule(static) reduction(+ : nan_rows) if (rows > 1) num_threads(threads)
  for (long r = 0; r < rows; r++) nan_rows += argmax_row(x + r * ld, cols, out + r);
  return nan_rows;
}
