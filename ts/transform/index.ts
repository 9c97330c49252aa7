export {
  HeaderTransformer,
  type HeaderTransformerOptions,
  type HeaderRulesInit,
  type AddValue,
  type ModifyValue,
  type TransformContext,
} from './header-transformer'
export { PathTransformer, type PathTransformerOptions } from './path-transformer'
export { BodyTransformer, type BodyTransformerOptions, type TransformFunction } from './body-transformer'
