/**
 * The warm pool in the admin view: per pooled type, how many started, unowned desktops are ready
 * for a launch to claim and how many are on their way, and each member with its state and how
 * long it has waited. Members have no owner and no route (nothing to open); an admin may delete
 * one — the pool starts another in its place.
 */
import type { Desktop } from '../api.ts';
import { memberLabel, poolGroups, poolSummary } from '../pool.ts';
import { ago, exact } from './time.ts';

const MEMBER_STATE: Record<string, string> = {
  creating: 'Starting',
  starting: 'Starting',
  running: 'Ready',
  stopping: 'Leaving',
  stopped: 'Stopped',
  failed: 'Failed',
};

function MemberCard({ member, typeName, onDelete }: { member: Desktop; typeName: string; onDelete: (m: Desktop) => void }) {
  const label = memberLabel(member);
  const headingId = `member-${member.id}-title`;
  const ready = member.state === 'running';
  return (
    <li class={`card desktop pool-member state-${member.state}`} aria-labelledby={headingId} data-desktop-id={member.id}>
      <div class="card-head">
        <h4 id={headingId} tabIndex={-1}>
          {label}
        </h4>
        <span class={`badge badge-${member.state}`} data-state={member.state}>
          <span class="visually-hidden">State: </span>
          {MEMBER_STATE[member.state] ?? member.state}
        </span>
      </div>
      <dl class="facts">
        <div>
          <dt>{ready ? 'Ready since' : 'Started'}</dt>
          <dd data-ready-at={member.readyAt ?? ''} title={exact(ready ? member.readyAt : member.createdAt)}>
            {ago(ready ? member.readyAt : member.createdAt)}
          </dd>
        </div>
        <div>
          <dt>Owner</dt>
          <dd>None until claimed</dd>
        </div>
      </dl>
      {member.state === 'failed' && member.reason ? (
        <p class="reason">
          <strong>Why it failed:</strong> {member.reason} <span class="muted">(the pool replaces it)</span>
        </p>
      ) : null}
      <div class="actions">
        <button type="button" class="danger" onClick={() => onDelete(member)}>
          Delete<span class="visually-hidden">{` ${label} of the ${typeName} pool`}</span>
        </button>
      </div>
    </li>
  );
}

export function PoolList({ members, typeNames, onDelete }: { members: Desktop[]; typeNames: ReadonlyMap<string, string>; onDelete: (m: Desktop) => void }) {
  const groups = poolGroups(members);
  if (groups.length === 0) {
    return <p class="muted">No desktop waits in a warm pool. A catalog type with <code>pool: {'{ size: N }'}</code> keeps N started here.</p>;
  }
  return (
    <>
      {groups.map((g) => {
        const name = typeNames.get(g.type) ?? g.type;
        const headingId = `pool-${g.type}-title`;
        return (
          <section class="pool-type" aria-labelledby={headingId} data-pool-type={g.type} key={g.type}>
            <h3 id={headingId}>
              {name} <span class="muted">({g.type})</span>: <span data-pool-summary>{poolSummary(g)}</span>
            </h3>
            <ul class="cards">
              {g.members.map((m) => (
                <MemberCard key={m.id} member={m} typeName={name} onDelete={onDelete} />
              ))}
            </ul>
          </section>
        );
      })}
    </>
  );
}

