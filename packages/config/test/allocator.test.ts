/**
 * The allocator a process runs on, from its memory map, and the environment files the deploy
 * folder keeps (systemd's EnvironmentFile= and compose's env_file format).
 */
import t from 'tap';
import { allocatorInUse, parseEnvFile } from '../src/index.ts';

t.test('jemalloc only when its library is mapped', async (t) => {
  const glibc = '7f00-7f10 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n';
  t.equal(allocatorInUse(glibc), 'glibc');
  t.equal(allocatorInUse(glibc + '7f20-7f30 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n'), 'jemalloc');
  t.equal(allocatorInUse('7f20-7f30 r-xp 00000000 08:01 2 /opt/libjemalloc.so.2/libc.so.6\n'), 'glibc', 'a folder named like it is not the library');
  t.equal(allocatorInUse(), 'glibc', 'this test process runs on glibc');
});

t.test('KEY=VALUE lines, comments and blank lines skipped, values kept whole', async (t) => {
  t.same(parseEnvFile('# allocator\n\nLD_PRELOAD=libjemalloc.so.2\nMALLOC_CONF=background_thread:true,dirty_decay_ms:10000\nEMPTY=\n'), {
    LD_PRELOAD: 'libjemalloc.so.2',
    MALLOC_CONF: 'background_thread:true,dirty_decay_ms:10000',
    EMPTY: '',
  });
  t.throws(() => parseEnvFile('A=1\nnot a setting\n', 'deploy/allocator.env'), { message: 'deploy/allocator.env, line 2: expected KEY=VALUE, got "not a setting"' });
  t.throws(() => parseEnvFile('=value'), /line 1: expected KEY=VALUE/);
  t.throws(() => parseEnvFile('1KEY=value'), /line 1: expected KEY=VALUE/);
});
