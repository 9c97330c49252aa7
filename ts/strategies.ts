/**
 * Load-balancing strategies. Built-in strategies are names the data plane knows; they
 * run in Rust and never call into JavaScript.
 */

/** The base of every strategy. */
export abstract class LoadBalancingStrategy {
  /** The native strategy's name. */
  abstract readonly kind: string
}

/** Each server in turn, in the order given. */
export class RoundRobinStrategy extends LoadBalancingStrategy {
  readonly kind = 'round_robin'
}
