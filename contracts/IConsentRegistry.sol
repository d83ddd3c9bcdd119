// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/**
 * @title Vellum consent registry
 * @notice The consents patients gave (FHIR R4 `Consent` resources, reduced to provisions over
 * fixed enumerations and keyed tokens) and the actors allowed to act on them, with the access
 * decision every Vellum server must follow: {decide}. The decision table is `docs/consent.md`;
 * bit positions of the enumerations below are on-chain meaning and never change.
 *
 * Nothing here identifies anyone: patients, actors, consent ids and every data token are keyed
 * pseudonyms (`HMAC-SHA-256(consentKey, ...)`, 32 bytes; a token's first byte is replaced by its
 * kind). A patient may hold a wallet ({registerWallet}); with it the patient revokes
 * ({revokeBySig}) or grants ({grantBySig}) a consent by EIP-712 signature (domain name
 * "VellumConsentRegistry", version "2"), which anyone may relay. A consent the patient revoked by
 * signature is LOCKED: the custodian cannot put it back in force; only a patient-signed grant
 * lifts the lock.
 *
 * Enumerations:
 *
 * - resource class: index into the alphabetical list of R4 resource types; `classes` bit i;
 * - action: `access, collect, use, disclose, correct` (0..4); `actions` bit i;
 * - purpose: v3 PurposeOfUse `TREAT, ETREAT, HPAYMT, HRESCH, PUBHLTH, HOPERAT, CAREMGT, PATRQT,
 *   FAMRQT, COVERAGE, HMARKT, HDIRECT, HSYSADMIN, HTEST, CLINTRCH, HLEGAL, HQUALIMP, HCOMPL,
 *   HACCRED, HOUTCOMS` (0..19); `purposes` bit i. TREAT (0) is treatment, ETREAT (1) emergency
 *   treatment;
 * - token kind (a token's first byte): custodian 1, author 2, class 3 (profile, content type),
 *   code 4, security label 5, data 6 (instance / related / dependents / authoredby).
 *
 * A zero mask, a zero bound and an empty list mean "no condition".
 */
interface IConsentRegistry {
    /// @notice A consent's state. `None`: never written.
    enum Status {
        None,
        Active,
        Revoked
    }

    /// @notice The answer of {decide}. Only `Permit`, `BreakGlass` and `Implied` allow access.
    enum Decision {
        NoConsent,
        Permit,
        Deny,
        BreakGlass,
        ActorNotApproved,
        Implied
    }

    /// @notice The jurisdiction's consent model: without a consent, `OptIn` denies; `OptOut`
    /// permits approved actors for treatment (TREAT, ETREAT) only.
    enum Model {
        OptIn,
        OptOut
    }

    /**
     * @notice One provision of a consent. `rules[0]` is the root provision; every other rule is
     * nested in `rules[parent]`, which comes before it (`parent < index`), to any depth. A rule
     * applies when its parent applies and each of its conditions holds; the most deeply nested
     * rules that apply decide, deny winning among equals.
     */
    struct Rule {
        /// index of the enclosing rule (ignored for rules[0])
        uint8 parent;
        /// provision.type (the root's: its own, else the consent's base policy): permit (true) or deny (false)
        bool permit;
        /// recipient actor keys (at most 8); empty = any actor
        bytes32[] actors;
        /// resource classes, bit i = R4 resource type i (or'ed with class tokens); none = every class
        uint256 classes;
        /// actions, bit i = action i; 0 = all
        uint16 actions;
        /// purposes of use, bit i = purpose i; 0 = all
        uint64 purposes;
        /// when the rule is in force, unix seconds, inclusive; 0 = unbounded
        uint64 start;
        uint64 end;
        /// when the data was recorded, unix seconds, inclusive; 0 = unbounded
        uint64 dataStart;
        uint64 dataEnd;
        /// data conditions (at most 32): keyed tokens whose first byte is their kind; one token
        /// of each kind present must be among the request's facts
        bytes32[] tokens;
    }

    /// @notice One access request to {decide}.
    struct Request {
        /// the patient whose data it is
        bytes32 patient;
        /// every identity of the requester (at most 4)
        bytes32[] actors;
        /// the R4 resource type's index
        uint8 resourceClass;
        /// the consent action's index
        uint8 action;
        /// the purposes of use the requester names (bit i = purpose i); a rule's purposes match any of them
        uint64 purposes;
        /// unix seconds
        uint64 time;
        /// when the data was recorded, unix seconds
        uint64 dataTime;
        /// the data's tokens (custodian, author, class, code, label, data), keyed as the rules' are
        bytes32[] facts;
    }

    /// @notice Consent `id` of `patient` is in force with new rules (by the custodian, or by the patient's signature).
    event ConsentPut(bytes32 indexed id, bytes32 indexed patient, bool bySignature);

    /// @notice Consent `id` of `patient` was revoked (by the custodian, or by the patient's signature, which locks it).
    event ConsentRevoked(bytes32 indexed id, bytes32 indexed patient, bool bySignature);

    /// @notice `requester` asked `patient` for access, as consent `id` (a request grants nothing).
    event AccessRequested(bytes32 indexed id, bytes32 indexed patient, bytes32 indexed requester);

    /// @notice The request `id` of `patient` was answered: `approved` (then {ConsentPut} follows) or rejected.
    event AccessRequestAnswered(bytes32 indexed id, bytes32 indexed patient, bool approved);

    /// @notice The consent model is now `model` (`forced`: it replaced another).
    event ConsentModelSet(Model model, bool forced);

    /// @notice `actor` may now be permitted access; with `emergency` it may also break the glass.
    event ActorApproved(bytes32 indexed actor, bool emergency);

    /// @notice `actor` is no longer approved: no permit applies to it any more.
    event ActorApprovalRevoked(bytes32 indexed actor);

    /// @notice `wallet` signs for `patient` from now on (the zero address: nobody does).
    event WalletRegistered(bytes32 indexed patient, address wallet);

    /// @notice `actor` read data of class `resourceClass` of `patient` by break-glass, for `purpose`.
    event EmergencyAccess(bytes32 indexed patient, bytes32 indexed actor, uint8 resourceClass, uint8 purpose);

    /// @notice The registry was deployed without an administrator.
    error ConsentRegistryZeroAdmin();

    /// @notice A consent id, patient or actor key is zero; keys are HMAC outputs, never zero.
    error ConsentZeroKey();

    /// @notice A consent needs at least its root rule.
    error ConsentNoRules();

    /// @notice `count` rules given; at most `max`.
    error ConsentTooManyRules(uint256 count, uint256 max);

    /// @notice Rule `ruleIndex` names `count` actors; at most `max`.
    error ConsentTooManyActors(uint256 ruleIndex, uint256 count, uint256 max);

    /// @notice Rule `ruleIndex` has `count` tokens; at most `max`.
    error ConsentTooManyTokens(uint256 ruleIndex, uint256 count, uint256 max);

    /// @notice Rule `ruleIndex` has a token of no known kind, or a parent that does not come before it.
    error ConsentBadRule(uint256 ruleIndex);

    /// @notice `patient` already has `max` consents in force.
    error ConsentTooManyConsents(bytes32 patient, uint256 max);

    /// @notice {decide} was given `count` request actors; at most `max`.
    error ConsentTooManyRequestActors(uint256 count, uint256 max);

    /// @notice The patient revoked consent `id` by signature; only their signed grant restores it.
    error ConsentLockedByPatient(bytes32 id);

    /// @notice Consent `id` exists for another patient.
    error ConsentPatientMismatch(bytes32 id);

    /// @notice Consent `id` was never written.
    error ConsentUnknown(bytes32 id);

    /// @notice The model is already set to another one; only a forced change replaces it.
    error ConsentModelChange(Model current);

    /// @notice The signature's `deadline` has passed.
    error ConsentSignatureExpired(uint256 deadline);

    /// @notice The signature is for nonce `given`, but the patient's next nonce is `expected`.
    error ConsentBadNonce(uint256 expected, uint256 given);

    /// @notice `patient` has no registered wallet, so nobody can sign for them.
    error ConsentNoWallet(bytes32 patient);

    /// @notice The signature is malformed or not by the patient's wallet.
    error ConsentBadSignature();

    /// @notice The role that mirrors consents, registers wallets and records break-glass accesses.
    function CUSTODIAN_ROLE() external view returns (bytes32);

    /// @notice The role that approves actors.
    function APPROVER_ROLE() external view returns (bytes32);

    /**
     * @notice Sets the consent model {decide} applies when no consent decides. The first call
     * sets it; a later call with another model needs `force` (the change is then public).
     *
     * Emits a {ConsentModelSet} event (unless the model is unchanged).
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE};
     * - a model already set may only be replaced with `force` ({ConsentModelChange}).
     */
    function setModel(Model model, bool force) external;

    /// @notice The consent model, and whether it was ever set (unset: `OptIn`).
    function model() external view returns (Model current, bool set);

    /**
     * @notice Approves `actor`; with `emergency` it may also break the glass (purpose ETREAT).
     * Approving again replaces the emergency flag.
     *
     * Emits an {ActorApproved} event.
     *
     * Requirements:
     *
     * - the caller must have {APPROVER_ROLE} (else `AccessControlUnauthorizedAccount`);
     * - `actor` must not be zero ({ConsentZeroKey}).
     */
    function approveActor(bytes32 actor, bool emergency) external;

    /**
     * @notice Withdraws `actor`'s approval (and emergency flag): no permit rule applies to it
     * any more, and it cannot break the glass. Consents naming it stay as they are.
     *
     * Emits an {ActorApprovalRevoked} event.
     *
     * Requirements:
     *
     * - the caller must have {APPROVER_ROLE}.
     */
    function revokeApproval(bytes32 actor) external;

    /// @notice Whether `actor` is approved, and whether with the emergency flag.
    function approvalOf(bytes32 actor) external view returns (bool approved, bool emergency);

    /**
     * @notice Records `wallet` as the address that signs for `patient` (zero: none).
     *
     * Emits a {WalletRegistered} event.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE};
     * - `patient` must not be zero ({ConsentZeroKey}).
     */
    function registerWallet(bytes32 patient, address wallet) external;

    /// @notice The wallet that signs for `patient`; the zero address if none.
    function walletOf(bytes32 patient) external view returns (address);

    /// @notice The nonce the next signature of `patient` must carry.
    function nonces(bytes32 patient) external view returns (uint256);

    /**
     * @notice Records that `requester` asked `patient` for access as consent `id` (a FHIR Consent
     * with status `proposed`). Nothing is put in force.
     *
     * Emits an {AccessRequested} event.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE};
     * - no key may be zero ({ConsentZeroKey}).
     */
    function requestAccess(bytes32 id, bytes32 patient, bytes32 requester) external;

    /**
     * @notice Records the patient's answer to request `id`: approved (the custodian then puts the
     * consent in force) or rejected.
     *
     * Emits an {AccessRequestAnswered} event.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE};
     * - no key may be zero ({ConsentZeroKey}).
     */
    function answerRequest(bytes32 id, bytes32 patient, bool approved) external;

    /**
     * @notice Creates consent `id` of `patient`, or replaces its rules; either way it is then
     * Active. A new consent takes its place after the patient's other consents. A permit rule may
     * name actors not approved yet: {decide} permits only approved actors.
     *
     * Emits a {ConsentPut} event with `bySignature` false.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE};
     * - `id` and `patient` must not be zero ({ConsentZeroKey});
     * - `id` must not belong to another patient ({ConsentPatientMismatch});
     * - the patient must not have revoked `id` by signature ({ConsentLockedByPatient});
     * - 1 to 32 rules ({ConsentNoRules}, {ConsentTooManyRules}), each naming at most 8 actors
     *   ({ConsentTooManyActors}) and 32 tokens ({ConsentTooManyTokens}) of known kinds, nested
     *   in a rule before it ({ConsentBadRule});
     * - if `id` is not in force, the patient must have fewer than 64 consents in force
     *   ({ConsentTooManyConsents}).
     */
    function putConsent(bytes32 id, bytes32 patient, Rule[] calldata rules) external;

    /**
     * @notice Revokes consent `id`. Revoking a revoked consent changes nothing and emits nothing.
     *
     * Emits a {ConsentRevoked} event with `bySignature` false.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE};
     * - `id` must exist ({ConsentUnknown}).
     */
    function revokeConsent(bytes32 id) external;

    /**
     * @notice Revokes consent `id` on the patient's EIP-712 signature of
     * `Revoke(bytes32 consentId,uint256 nonce,uint256 deadline)` and locks it: the custodian
     * cannot put it back. Anyone may send this.
     *
     * Emits a {ConsentRevoked} event with `bySignature` true.
     *
     * Requirements:
     *
     * - `block.timestamp <= deadline` ({ConsentSignatureExpired});
     * - `id` must exist ({ConsentUnknown});
     * - `nonce` must be the patient's next nonce ({ConsentBadNonce}); it is then used up;
     * - the patient must have a wallet ({ConsentNoWallet}) and `signature` must be its
     *   ({ConsentBadSignature}).
     */
    function revokeBySig(bytes32 id, uint256 nonce, uint256 deadline, bytes calldata signature) external;

    /**
     * @notice Creates or replaces consent `id` of `patient` on the patient's EIP-712 signature of
     * `Grant(bytes32 consentId,bytes32 patient,Rule[] rules,uint256 nonce,uint256 deadline)` with
     * `Rule(uint8 parent,bool permit,bytes32[] actors,uint256 classes,uint16 actions,uint64 purposes,uint64 start,uint64 end,uint64 dataStart,uint64 dataEnd,bytes32[] tokens)`,
     * and lifts the patient's lock. Anyone may send this.
     *
     * Emits a {ConsentPut} event with `bySignature` true.
     *
     * Requirements: those of {putConsent} except the role and the lock, and those of
     * {revokeBySig} on the deadline, nonce and signature.
     */
    function grantBySig(
        bytes32 id,
        bytes32 patient,
        Rule[] calldata rules,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external;

    /**
     * @notice Records that `actor` read data of class `resourceClass` of `patient` by
     * break-glass, for `purpose`.
     *
     * Emits an {EmergencyAccess} event.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE}.
     */
    function recordEmergencyAccess(bytes32 patient, bytes32 actor, uint8 resourceClass, uint8 purpose) external;

    /**
     * @notice Consent `id`: its patient, status, whether the patient locked it, and its rules.
     * An unknown id gives status `None` and nothing else.
     */
    function consentOf(bytes32 id)
        external
        view
        returns (bytes32 patient, Status status, bool lockedByPatient, Rule[] memory rules);

    /// @notice The ids of every consent of `patient` ever written (revoked ones included), in the order first written.
    function consentsOf(bytes32 patient) external view returns (bytes32[] memory);

    /**
     * @notice The access decision for `request`, with the consent that decided it (zero unless
     * `Permit` or `Deny`). See `docs/consent.md` for the table.
     *
     * A rule matches when its parent matches (the root: always) and: `time` is within
     * `[start, end]` and `dataTime` within `[dataStart, dataEnd]` (zero bounds are open); the
     * class bit is set or a class token is among the facts (no classes and no class token: any
     * class); the action bit is set (or `actions` is zero); some request purpose is in
     * `purposes` (or it is zero); for each other token kind the rule has, one of its tokens of
     * that kind is among the facts; and some request actor is in `actors` (or `actors` is
     * empty) — for a permit rule, an approved one. A consent's verdict is that of its most
     * deeply nested matching rules, deny winning among equals; none when its root does not
     * match. Over the patient's Active consents, in the order first written:
     *
     * 1. `Deny` with the first denying consent. Break-glass (ETREAT among the purposes and a
     *    request actor approved with the emergency flag) sets a deny aside unless a rule on the
     *    denying rule's path names ETREAT among its purposes; a deny set aside makes the answer
     *    `BreakGlass` (step 4) whatever permits;
     * 2. `Permit` with the first permitting consent;
     * 3. `Implied` when the model is `OptOut`, every request purpose is TREAT or ETREAT, and a
     *    request actor is approved;
     * 4. `BreakGlass` when break-glass applies;
     * 5. `ActorNotApproved` when no request actor is approved;
     * 6. `NoConsent`.
     *
     * Requirements:
     *
     * - at most 4 request actors ({ConsentTooManyRequestActors}).
     */
    function decide(Request calldata request) external view returns (Decision decision, bytes32 consentId);

    /// @notice Whether {decide} answers `Permit`, `BreakGlass` or `Implied`.
    function isPermitted(Request calldata request) external view returns (bool);
}
